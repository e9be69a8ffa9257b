"""The build context: unpacking with .dockerignore, and the contexts kept
for rebuilds by the digest of their upload."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.builder import context as build_context
from services.builder.context import ContextCache
from services.common.errors import InvalidArgument


def tar_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def acquire(cache: ContextCache, data: bytes, dockerfile: str = "") -> build_context.Context:
    return asyncio.run(cache.acquire(chunks_of(data), dockerfile))


def test_dockerignore_removes_what_it_excludes_but_its_exceptions(tmp_path: Path) -> None:
    upload = io.BytesIO(tar_of({
        "Dockerfile": "FROM scratch\n",
        ".dockerignore": "logs\n*.txt\n!logs/keep.txt\nDockerfile\n",
        "a.txt": "a", "b.bin": "b", "logs/one.txt": "1", "logs/keep.txt": "k",
        "logs/deep/two.txt": "2"}))
    context = build_context.unpack(upload, tmp_path, "")
    files = sorted(str(p.relative_to(context.root)) for p in context.root.rglob("*"))
    assert files == [".dockerignore", "b.bin", "logs", "logs/keep.txt"]
    assert context.dockerfile_text == "FROM scratch\n"   # read, then removed as excluded
    context.remove()
    assert not context.root.exists()



def test_directories_keep_their_mtimes_from_the_upload(tmp_path: Path) -> None:
    """COPY of a directory keeps its subdirectories' mtimes, as dockerd's
    does: what is unpacked into a directory does not change its mtime."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("src", "src/sub"):
            member = tarfile.TarInfo(name)
            member.type, member.mode, member.mtime = tarfile.DIRTYPE, 0o755, 1000
            tar.addfile(member)
        for name, text in {"Dockerfile": "FROM scratch\n", "src/sub/f.txt": "f",
                           "src/sub/x.log": "x", ".dockerignore": "src/sub/x.log\n"}.items():
            member = tarfile.TarInfo(name)
            member.size = len(text)
            tar.addfile(member, io.BytesIO(text.encode()))
    buffer.seek(0)
    upload = buffer
    context = build_context.unpack(upload, tmp_path, "")
    assert [(context.root / d).stat().st_mtime for d in ("src", "src/sub")] == [1000, 1000]
    assert not (context.root / "src/sub/x.log").exists()
    context.remove()

def test_entries_outside_the_context_are_refused_and_nothing_stays(tmp_path: Path) -> None:
    upload = io.BytesIO(tar_of({"Dockerfile": "FROM scratch\n", "../evil": "x"}))
    with pytest.raises(InvalidArgument, match='"../evil" is outside of'):
        build_context.unpack(upload, tmp_path, "")
    assert not list(tmp_path.iterdir())
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize("target", ["{secret}", "../secret", "lnk/secret"])
def test_hard_links_cannot_reach_host_files(tmp_path: Path, target: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host")
    work = tmp_path / "work"
    work.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("lnk")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(link)
        hard = tarfile.TarInfo("stolen")
        hard.type, hard.linkname = tarfile.LNKTYPE, target.format(secret=secret)
        tar.addfile(hard)
    buffer.seek(0)
    expected = "no such file in" if target == "{secret}" else "leads outside of"
    with pytest.raises(InvalidArgument, match=f'hard link "stolen" -> .* {expected} the build'):
        build_context.unpack(buffer, work, "")
    assert secret.stat().st_nlink == 1
    assert not list(work.iterdir())


def test_hard_links_inside_the_context_are_kept(tmp_path: Path) -> None:
    buffer = io.BytesIO(tar_of({"Dockerfile": "FROM scratch\n", "dir/file": "x"}))
    with tarfile.open(fileobj=buffer, mode="a") as tar:
        for name, target in (("relative", "dir/file"), ("absolute", "/dir/file")):
            hard = tarfile.TarInfo(name)
            hard.type, hard.linkname = tarfile.LNKTYPE, target
            tar.addfile(hard)
    buffer.seek(0)
    context = build_context.unpack(buffer, tmp_path, "")
    assert (context.root / "dir" / "file").stat().st_nlink == 3
    context.remove()


def test_the_same_upload_reuses_its_unpacked_context(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ContextCache(tmp_path)
    data = tar_of({"Dockerfile": "FROM scratch\n", "a.txt": "a"})
    first = acquire(cache, data)
    digest = first.digests.of([first.root / "a.txt"])
    cache.release(first)
    monkeypatch.setattr(build_context, "unpack", pytest.fail)
    again = acquire(cache, data)
    assert again is first and again.digests.of([again.root / "a.txt"]) == digest
    cache.release(again)
    assert list(tmp_path.iterdir()) == [first.root]


def test_another_upload_or_dockerfile_is_unpacked_anew(tmp_path: Path) -> None:
    cache = ContextCache(tmp_path)
    data = tar_of({"Dockerfile": "FROM scratch\n", "other.Dockerfile": "FROM other\n"})
    first = acquire(cache, data)
    other_file = acquire(cache, data, "other.Dockerfile")
    changed = acquire(cache, tar_of({"Dockerfile": "FROM changed\n"}))
    assert len({first.root, other_file.root, changed.root}) == 3
    assert other_file.dockerfile_text == "FROM other\n"
    for context in (first, other_file, changed):
        cache.release(context)


def test_idle_contexts_are_evicted_oldest_first_and_pruned(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(build_context, "KEPT_CONTEXTS", 2)
    cache = ContextCache(tmp_path)
    contexts = [acquire(cache, tar_of({"Dockerfile": f"FROM image{n}\n"})) for n in range(3)]
    for context in contexts:
        cache.release(context)
    assert [c.root.exists() for c in contexts] == [False, True, True]
    in_use = acquire(cache, tar_of({"Dockerfile": "FROM image2\n"}))
    cache.clear()
    assert [c.root.exists() for c in contexts] == [False, False, True]
    cache.release(in_use)
    cache.clear()
    assert not in_use.root.exists()


def test_a_context_too_big_to_keep_goes_with_its_build(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_context, "KEPT_CONTEXT_BYTES", 100)
    cache = ContextCache(tmp_path)
    context = acquire(cache, tar_of({"Dockerfile": "FROM scratch\n"}))
    assert context.root.is_dir()
    cache.release(context)
    assert not context.root.exists()


def test_an_upload_spooled_to_disk_leaves_no_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_context, "SPOOLED_IN_MEMORY", 100)
    cache = ContextCache(tmp_path)
    context = acquire(cache, tar_of({"Dockerfile": "FROM scratch\n", "big": "x" * 5000}))
    assert (context.root / "big").stat().st_size == 5000
    assert list(tmp_path.iterdir()) == [context.root]
    cache.release(context)


def test_a_build_cancelled_while_unpacking_leaves_no_context(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    real_unpack = build_context.unpack

    def slow_unpack(upload, workdir, dockerfile):  # noqa: ANN001, ANN202
        data = io.BytesIO(upload.read())   # the spool closes when the build is cancelled
        time.sleep(0.2)
        return real_unpack(data, workdir, dockerfile)

    monkeypatch.setattr(build_context, "unpack", slow_unpack)

    async def cancel_while_unpacking() -> None:
        cache = ContextCache(tmp_path)
        building = asyncio.create_task(
            cache.acquire(chunks_of(tar_of({"Dockerfile": "FROM scratch\n"})), ""))
        await asyncio.sleep(0.05)
        building.cancel()
        with pytest.raises(asyncio.CancelledError):
            await building
        await asyncio.sleep(0.4)

    asyncio.run(cancel_while_unpacking())
    assert not list(tmp_path.iterdir())
