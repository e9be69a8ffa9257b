"""docker cp's file system logic on plain directories: chroot-like path
resolution, path stat, tar out, safe extraction, and extraction in a thread
chrooted into the root."""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common import gomode
from services.common.errors import Internal, InvalidArgument, NotFound
from services.container import archive, chroot_thread

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (rootfs / "data").mkdir()
    (rootfs / "data" / "file").write_text("hello")
    os.symlink("/etc", rootfs / "abs-etc")
    os.symlink("../../../../..", rootfs / "up")
    os.symlink("/data/file", rootfs / "data" / "link")
    return rootfs


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, content in members:
            if content is not None:
                member.size = len(content)
            tar.addfile(member, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644,
          uid: int = 0) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.mode = kind, linkname, mode
    member.uid = member.gid = uid
    return member


def untar(root: Path, directory: str, data: bytes, **options) -> None:
    host_dir = archive.extraction_dir(str(root), directory, "missing")
    stream = io.BytesIO(data)
    archive.untar_into(host_dir, directory, stream.read, archive.ExtractOptions(**options))


def test_secure_join_keeps_every_path_inside_the_root(root: Path) -> None:
    r = str(root)
    assert archive.secure_join(r, "/../../etc/passwd") == f"{r}/etc/passwd"
    assert archive.secure_join(r, "/abs-etc/passwd") == f"{r}/etc/passwd"
    assert archive.secure_join(r, "/up/etc") == f"{r}/etc"
    assert archive.secure_join(r, "/up") == r
    assert archive.secure_join(r, "/up", follow_last=False) == f"{r}/up"
    assert archive.secure_join(r, "/missing/../data") == f"{r}/data"


def test_symlink_loops_are_refused(root: Path) -> None:
    os.symlink("/loop", root / "loop")
    with pytest.raises(InvalidArgument):
        archive.secure_join(str(root), "/loop/x")


def test_stat_reports_go_modes_and_link_targets(root: Path) -> None:
    info = archive.stat_path(str(root), "/data", "nope")
    assert info.name == "data" and info.mode == gomode.DIR | 0o755
    link = archive.stat_path(str(root), "/data/link", "nope")
    assert link.mode & gomode.SYMLINK and link.link_target == "/data/file"
    escaped = archive.stat_path(str(root), "/up", "nope")
    assert escaped.link_target == "/"
    assert archive.stat_path(str(root), "/", "nope").name == "/"
    with pytest.raises(NotFound, match="nope"):
        archive.stat_path(str(root), "/nothing", "nope")


def test_go_time_matches_rfc3339_nano() -> None:
    assert archive.go_time(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert archive.go_time(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def collect_tar(root: Path, path: str) -> dict[str, tarfile.TarInfo]:
    chunks: list[bytes] = []
    archive.write_tar(str(root), path, chunks.append)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_tar_is_rebased_on_the_base_name_and_keeps_symlinks(root: Path) -> None:
    assert set(collect_tar(root, "/data")) == {"data", "data/file", "data/link"}
    assert set(collect_tar(root, "/data/.")) == {".", "./file", "./link"}
    link = collect_tar(root, "/abs-etc")
    assert link["abs-etc"].issym() and link["abs-etc"].linkname == "/etc"
    assert set(collect_tar(root, "/abs-etc/")) == {"abs-etc", "abs-etc/passwd", "abs-etc/group"}


def test_extracts_files_dirs_and_links(root: Path) -> None:
    untar(root, "/data", tar_bytes(
        (entry("new", tarfile.DIRTYPE, mode=0o750), None),
        (entry("new/a", uid=1234), b"A"),
        (entry("new/hard", tarfile.LNKTYPE, "new/a", uid=1234), None),
        (entry("new/abs", tarfile.SYMTYPE, "/etc/passwd"), None)))
    new = root / "data" / "new"
    assert (new / "a").read_text() == "A" and (new / "a").stat().st_uid == 1234
    assert (new / "hard").stat().st_ino == (new / "a").stat().st_ino
    assert os.readlink(new / "abs") == "/etc/passwd"
    assert new.stat().st_mode & 0o777 == 0o750
    assert not [p for p in (root / "data").iterdir() if p.name.startswith(".berth-cp-")]


def test_extracts_through_a_symlinked_destination_inside_the_root(root: Path) -> None:
    untar(root, "/abs-etc", tar_bytes((entry("motd"), b"hi")))
    assert (root / "etc" / "motd").read_text() == "hi"
    untar(root, "/up", tar_bytes((entry("top"), b"t")))
    assert (root / "top").read_text() == "t"


def test_owner_option_chowns_every_entry(root: Path) -> None:
    untar(root, "/data", tar_bytes((entry("owned", uid=7), b"x")), owner=(1000, 1001))
    info = (root / "data" / "owned").stat()
    assert (info.st_uid, info.st_gid) == (1000, 1001)


@pytest.mark.parametrize("members", [
    [(entry("../escape"), b"x")],
    [(entry("link", tarfile.SYMTYPE, "/"), None), (entry("link/escape"), b"x")],
    [(entry("rel", tarfile.SYMTYPE, "../../../../../../.."), None), (entry("rel/escape"), b"x")],
    [(entry("hard", tarfile.LNKTYPE, "../../../../../../etc/hostname"), None)],
], ids=["dotdot", "absolute-symlink-parent", "relative-symlink-parent", "hardlink-out"])
def test_escaping_entries_are_refused_and_nothing_is_written(root: Path, tmp_path: Path,
                                                            members: list) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidArgument):
        untar(root, "/data", tar_bytes((entry("first"), b"1"), *members))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in (root / "data").iterdir()) == ["file", "link"]
    assert not (root.parent / "escape").exists()


def test_malformed_and_truncated_archives_are_refused(root: Path) -> None:
    whole = tar_bytes((entry("big"), b"x" * 100_000))
    for data in (b"this is not a tar archive" * 40, whole[:5000]):
        with pytest.raises(InvalidArgument):
            untar(root, "/data", data)
    assert sorted(p.name for p in (root / "data").iterdir()) == ["file", "link"]


def test_no_overwrite_dir_non_dir(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot overwrite non-directory"):
        untar(root, "/data", tar_bytes((entry("file", tarfile.DIRTYPE, mode=0o755), None)),
              no_overwrite_dir_non_dir=True)
    (root / "data" / "dir").mkdir()
    with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
        untar(root, "/data", tar_bytes((entry("dir"), b"x")), no_overwrite_dir_non_dir=True)
    untar(root, "/data", tar_bytes((entry("dir"), b"x")))
    assert (root / "data" / "dir").read_text() == "x"


def test_extraction_point_must_be_an_existing_directory(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="extraction point is not a directory"):
        archive.extraction_dir(str(root), "/data/file", "missing")
    with pytest.raises(NotFound, match="missing"):
        archive.extraction_dir(str(root), "/nothing", "missing")


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def join_extractors(name: str = "berth-untar") -> None:
    """Wait for the chrooted threads, which end right after their work."""
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join(timeout=10)
    assert not [t for t in threading.enumerate() if t.name == name]


def test_chrooted_extraction_resolves_in_the_root_and_leaves_the_process_alone(
        root: Path) -> None:
    cwd, host_root = os.getcwd(), os.stat("/")
    data = tar_bytes((entry("berth-chroot-test"), b"in"), (entry("sub/f"), b"f"))
    # /abs-etc is a symlink to /etc: the thread's chroot makes that the root's /etc.
    asyncio.run(chroot_thread.untar_chrooted(str(root), "/abs-etc", archive.ExtractOptions(),
                                              chunks_of(data)))
    join_extractors()
    assert (root / "etc" / "berth-chroot-test").read_text() == "in"
    assert (root / "etc" / "sub" / "f").read_text() == "f"
    assert not Path("/etc/berth-chroot-test").exists()
    assert os.getcwd() == cwd and os.stat("/").st_ino == host_root.st_ino
    assert not [p for p in (root / "etc").iterdir() if p.name.startswith(".berth-cp-")]


def test_chrooted_extraction_refuses_escapes(root: Path) -> None:
    data = tar_bytes((entry("first"), b"1"), (entry("link", tarfile.SYMTYPE, "/"), None),
                     (entry("link/escape"), b"x"))
    with pytest.raises(InvalidArgument):
        asyncio.run(chroot_thread.untar_chrooted(str(root), "/data",
                                                  archive.ExtractOptions(), chunks_of(data)))
    join_extractors()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["file", "link"]


def test_a_root_that_cannot_be_entered_is_an_internal_error(tmp_path: Path) -> None:
    with pytest.raises(Internal, match="extracting the archive failed"):
        asyncio.run(chroot_thread.untar_chrooted(
            str(tmp_path / "gone"), "/", archive.ExtractOptions(), chunks_of(b"")))
    join_extractors()


def test_a_chrooted_thread_imports_nothing(root: Path) -> None:
    # A stdlib module nothing imports (colorsys comes with rich, which httpx
    # loads when it is installed).
    assert "tabnanny" not in sys.modules
    refused: list[ImportError] = []

    def chrooted() -> None:
        with chroot_thread._chroot_this_thread(str(root)):
            try:
                importlib.import_module("tabnanny")
            except ImportError as exc:
                refused.append(exc)

    thread = threading.Thread(target=chrooted)
    thread.start()
    thread.join()
    assert refused and "refused" in str(refused[0]) and "tabnanny" not in sys.modules


def test_a_cancelled_upload_ends_the_thread_and_leaves_nothing(root: Path) -> None:
    data = tar_bytes((entry("big"), b"x" * 100_000))

    async def stalled() -> AsyncIterator[bytes]:
        yield data[:4096]
        await asyncio.Event().wait()

    async def cancel_midway() -> None:
        task = asyncio.create_task(chroot_thread.untar_chrooted(
            str(root), "/data", archive.ExtractOptions(), stalled()))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    join_extractors()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["file", "link"]


MAKE_TAR = """
import asyncio, io, sys, tarfile
from functools import partial
from services.container import archive, chroot_thread, upperdir

async def tar_of(root, make):
    return b"".join([chunk async for chunk in chroot_thread.tar_chrooted(root, make)])

root, command = sys.argv[1], sys.argv[2]
make = {"tar": partial(archive.write_tar, "/", "/data"),
        "tree": partial(archive.write_tree_tar, "/"),
        "layer": partial(upperdir.write_layer_tar, "/")}[command]
with tarfile.open(fileobj=io.BytesIO(asyncio.run(tar_of(root, make)))) as tar:
    assert tar.getnames()
"""


@pytest.mark.parametrize("command", ["tar", "tree", "layer"])
def test_tars_are_made_without_the_containers_nss_modules(root: Path, command: str) -> None:
    # CVE-2019-14271: an owner name looked up inside the chroot loads the
    # libnss modules that the container's nsswitch.conf names.
    (root / "etc" / "nsswitch.conf").write_text("passwd: berthevil\ngroup: berthevil\n")
    made = subprocess.run([sys.executable, "-c", MAKE_TAR, str(root), command], cwd=REPO,
                          capture_output=True, timeout=60,
                          env=dict(os.environ, LD_DEBUG="libs"))
    assert made.returncode == 0, made.stderr[-2000:]
    assert b"berthevil" not in made.stderr


def test_a_chrooted_tar_streams_and_stops_with_its_reader(root: Path) -> None:
    (root / "only-in-the-root").write_text("")

    def endless(write) -> None:  # noqa: ANN001
        assert os.path.isfile("/only-in-the-root")   # chrooted
        while True:
            write(b"x" * 65536)

    async def take_one_chunk() -> int:
        stream = chroot_thread.tar_chrooted(str(root), endless)
        chunk = await anext(stream)
        await stream.aclose()
        return len(chunk)

    assert asyncio.run(take_one_chunk()) >= chroot_thread.TAR_CHUNK
    join_extractors("berth-tar")


def test_a_chrooted_tar_that_is_refused_raises_its_error(root: Path) -> None:
    def refused(write) -> None:  # noqa: ANN001
        write(b"partial")
        raise InvalidArgument("not here")

    async def read_all() -> list[bytes]:
        return [chunk async for chunk in chroot_thread.tar_chrooted(str(root), refused)]

    with pytest.raises(InvalidArgument, match="not here"):
        asyncio.run(read_all())
    join_extractors("berth-tar")
