"""docker cp end to end: files, directories and symlinks both ways, archive
mode, stopped containers, the path stat header, and every way an archive or
a path could try to reach outside the container's file system."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from pathlib import Path

import docker
import pytest

from tests.support.engine import Engine


def out(result) -> str:
    return result.stdout.decode().strip()


def tar_of(*members: tuple[str, bytes | None, bytes, str]) -> bytes:
    """(name, content or None, type, linkname) entries as a tar archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, kind, linkname in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, linkname, 0o644
            info.size = len(content or b"")
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def host_mounts(root: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(root))]


def wait_unmounted(engine: Engine, cid: str) -> None:
    """The service unmounts once a stream is over, maybe just after the client is."""
    deadline = time.monotonic() + 5
    while [m for m in host_mounts(engine.root / "data") if cid in m]:
        assert time.monotonic() < deadline, "rootfs of a stopped container left mounted"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def box(engine: Engine, busybox: str):
    name = "cp-box"
    engine.docker("run", "-d", "--network", "none", "--name", name, busybox, "sleep", "1000")
    engine.docker("exec", name, "sh", "-c",
                  "mkdir -p /data/sub && echo content > /data/f && echo deep > /data/sub/g"
                  " && ln -s /etc /data/etclink && mkdir /links && ln -s ../../../../../ /links/up"
                  " && chown -R 1000:1000 /data/sub && echo container > /marker")
    yield name
    engine.docker("rm", "-f", name, check=False)


def test_copy_out_files_dirs_and_symlinks(engine: Engine, box: str, tmp_path: Path) -> None:
    engine.docker("cp", f"{box}:/data", str(tmp_path / "data"))
    assert (tmp_path / "data" / "f").read_text() == "content\n"
    assert (tmp_path / "data" / "sub" / "g").read_text() == "deep\n"
    assert os.readlink(tmp_path / "data" / "etclink") == "/etc"
    engine.docker("cp", f"{box}:/data/f", str(tmp_path / "single"))
    assert (tmp_path / "single").read_text() == "content\n"
    engine.docker("cp", "-L", f"{box}:/data/etclink/passwd", str(tmp_path / "passwd"))
    assert "root:" in (tmp_path / "passwd").read_text()
    stream, _ = engine.client().api.get_archive(box, "/data/sub")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        owners = {m.name: (m.uid, m.gid) for m in tar.getmembers()}
    assert owners == {"sub": (1000, 1000), "sub/g": (1000, 1000)}


def test_copy_in_files_and_dirs(engine: Engine, box: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("A")
    os.symlink("a.txt", tmp_path / "in" / "link")
    engine.docker("cp", str(tmp_path / "in"), f"{box}:/copied")
    assert out(engine.docker("exec", box, "cat", "/copied/a.txt")) == "A"
    assert out(engine.docker("exec", box, "readlink", "/copied/link")) == "a.txt"
    engine.docker("cp", str(tmp_path / "in" / "a.txt"), f"{box}:/renamed.txt")
    assert out(engine.docker("exec", box, "cat", "/renamed.txt")) == "A"
    engine.docker("cp", str(tmp_path / "in") + "/.", f"{box}:/tmp/")
    assert out(engine.docker("exec", box, "cat", "/tmp/a.txt")) == "A"
    os.chown(tmp_path / "in" / "a.txt", 4321, 4321)
    engine.docker("cp", str(tmp_path / "in" / "a.txt"), f"{box}:/kept.txt")
    assert out(engine.docker("exec", box, "stat", "-c", "%u:%g", "/kept.txt")) == "4321:4321"


def test_archive_mode_gives_files_to_the_container_user(engine: Engine, busybox: str,
                                                        tmp_path: Path) -> None:
    engine.docker("run", "-d", "--network", "none", "--name", "cp-user", "--user",
                  "nobody", busybox, "sleep", "100")
    try:
        (tmp_path / "mine").write_text("m")
        engine.docker("cp", "-a", str(tmp_path / "mine"), "cp-user:/tmp/mine")
        owner = out(engine.docker("exec", "cp-user", "stat", "-c", "%U", "/tmp/mine"))
        assert owner == "nobody"
    finally:
        engine.docker("rm", "-f", "cp-user")


def test_copy_with_a_stopped_container(engine: Engine, busybox: str, tmp_path: Path) -> None:
    engine.docker("create", "--network", "none", "--name", "cp-stopped", busybox, "true")
    cid = out(engine.docker("inspect", "-f", "{{.Id}}", "cp-stopped"))
    try:
        (tmp_path / "file").write_text("into a stopped container")
        engine.docker("cp", str(tmp_path / "file"), "cp-stopped:/file")
        engine.docker("cp", "cp-stopped:/file", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "into a stopped container"
        wait_unmounted(engine, cid)
    finally:
        engine.docker("rm", "-f", "cp-stopped")


def test_path_stat_header_and_missing_paths(engine: Engine, box: str) -> None:
    api = engine.client().api
    stat = api.get_archive(box, "/data/etclink")[1]
    assert stat["name"] == "etclink" and stat["linkTarget"] == "/etc"
    assert stat["mode"] & (1 << 27)
    response = api.head(api._url("/containers/{0}/archive", box), params={"path": "/data"})
    header = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
    assert header["name"] == "data" and header["mode"] == (1 << 31) | 0o755
    missing = api.head(api._url("/containers/{0}/archive", box), params={"path": "/nope"})
    assert missing.status_code == 404
    result = engine.docker("cp", f"{box}:/nope", "/tmp/never", check=False)
    assert result.returncode != 0 and "/nope" in result.stderr.decode()
    assert not Path("/tmp/never").exists()


def test_reads_through_links_stay_in_the_container(engine: Engine, box: str,
                                                   tmp_path: Path) -> None:
    host_marker = Path("/marker")
    assert not host_marker.exists()
    engine.docker("cp", f"{box}:/links/up/marker", str(tmp_path / "m"))
    assert (tmp_path / "m").read_text() == "container\n"
    engine.docker("exec", box, "ln", "-s", "/../../../../etc/hostname", "/hostlink")
    engine.docker("cp", "-L", f"{box}:/hostlink", str(tmp_path / "h"))
    in_container = out(engine.docker("exec", box, "cat", "/etc/hostname"))
    assert (tmp_path / "h").read_text().strip() == in_container


def test_writes_through_links_stay_in_the_container(engine: Engine, box: str,
                                                    tmp_path: Path) -> None:
    (tmp_path / "evil").write_text("x")
    engine.docker("cp", str(tmp_path / "evil"), f"{box}:/links/up/tmp/")
    assert out(engine.docker("exec", box, "cat", "/tmp/evil")) == "x"
    assert not Path("/tmp/evil").exists()
    api = engine.client().api
    api.put_archive(box, "/data/etclink", tar_of(("through-link", b"y", tarfile.REGTYPE, "")))
    assert out(engine.docker("exec", box, "cat", "/etc/through-link")) == "y"
    assert not Path("/etc/through-link").exists()


@pytest.mark.parametrize("members", [
    [("../../../../../../tmp/berth-cp-escape", b"x", tarfile.REGTYPE, "")],
    [("link", None, tarfile.SYMTYPE, "/"), ("link/tmp/berth-cp-escape", b"x",
                                           tarfile.REGTYPE, "")],
    [("hard", None, tarfile.LNKTYPE, "../../../../../../etc/hostname")],
], ids=["dotdot", "through-symlink", "hardlink-out"])
def test_escaping_archives_are_refused(engine: Engine, box: str, members: list) -> None:
    Path("/tmp/berth-cp-escape").unlink(missing_ok=True)   # this test's own marker
    api = engine.client().api
    with pytest.raises(docker.errors.APIError) as refused:
        api.put_archive(box, "/tmp", tar_of(("first", b"1", tarfile.REGTYPE, ""), *members))
    assert refused.value.status_code == 400
    assert not Path("/tmp/berth-cp-escape").exists()
    listing = out(engine.docker("exec", box, "ls", "-a", "/tmp")).split()
    assert "first" not in listing and not [n for n in listing if n.startswith(".berth-cp")]


def test_malformed_archives_are_refused(engine: Engine, box: str) -> None:
    api = engine.client().api
    whole = tar_of(("big", b"z" * 200_000, tarfile.REGTYPE, ""))
    for body in (b"definitely not a tar archive" * 100, whole[:20_000]):
        with pytest.raises(docker.errors.APIError) as refused:
            api.put_archive(box, "/tmp", body)
        assert refused.value.status_code == 400
    assert "big" not in out(engine.docker("exec", box, "ls", "/tmp")).split()
    with pytest.raises(docker.errors.APIError) as not_dir:
        api.put_archive(box, "/data/f", tar_of(("x", b"", tarfile.REGTYPE, "")))
    assert not_dir.value.status_code == 400


def test_no_overwrite_dir_with_file(engine: Engine, box: str, tmp_path: Path) -> None:
    (tmp_path / "sub").write_text("a file named like a directory")
    result = engine.docker("cp", str(tmp_path / "sub"), f"{box}:/data/", check=False)
    assert result.returncode != 0 and "cannot overwrite" in result.stderr.decode()
    assert out(engine.docker("exec", box, "cat", "/data/sub/g")) == "deep"


def test_copy_events(engine: Engine, box: str, tmp_path: Path) -> None:
    since = str(time.time() - 1)
    (tmp_path / "e").write_text("e")
    engine.docker("cp", str(tmp_path / "e"), f"{box}:/tmp/")
    engine.docker("cp", f"{box}:/tmp/e", str(tmp_path / "e2"))
    result = engine.docker("events", "--since", since, "--until", str(time.time() + 1),
                           "--format", "{{.Action}}", "--filter", f"container={box}")
    actions = out(result).splitlines()
    assert "extract-to-dir" in actions and "archive-path" in actions


def test_copy_into_volumes_of_running_and_stopped_containers(engine: Engine, busybox: str,
                                                             tmp_path: Path) -> None:
    engine.docker("run", "-d", "--network", "none", "--name", "cp-vol", "-v", "cpdata:/vol",
                  busybox, "sleep", "100")
    try:
        (tmp_path / "v").write_text("in volume")
        engine.docker("cp", str(tmp_path / "v"), "cp-vol:/vol/v")
        assert out(engine.docker("exec", "cp-vol", "cat", "/vol/v")) == "in volume"
        engine.docker("stop", "-t", "0", "cp-vol")
        engine.docker("cp", "cp-vol:/vol/v", str(tmp_path / "back"))
        assert (tmp_path / "back").read_text() == "in volume"
        (tmp_path / "w").write_text("while stopped")
        engine.docker("cp", str(tmp_path / "w"), "cp-vol:/vol/w")
        wait_unmounted(engine, out(engine.docker("inspect", "-f", "{{.Id}}", "cp-vol")))
        engine.docker("start", "cp-vol")
        assert out(engine.docker("exec", "cp-vol", "cat", "/vol/w")) == "while stopped"
    finally:
        engine.docker("rm", "-f", "-v", "cp-vol")
        engine.docker("volume", "rm", "cpdata", check=False)


def test_read_only_rootfs_and_volumes_refuse_copies(engine: Engine, busybox: str,
                                                    tmp_path: Path) -> None:
    engine.docker("run", "-d", "--network", "none", "--name", "cp-ro", "--read-only",
                  "-v", "cpro:/ro:ro", "-v", "cprw:/rw", busybox, "sleep", "100")
    try:
        (tmp_path / "f").write_text("f")
        rootfs = engine.docker("cp", str(tmp_path / "f"), "cp-ro:/", check=False)
        assert "container rootfs is marked read-only" in rootfs.stderr.decode()
        volume = engine.docker("cp", str(tmp_path / "f"), "cp-ro:/ro/", check=False)
        assert "mounted volume is marked read-only" in volume.stderr.decode()
        engine.docker("cp", str(tmp_path / "f"), "cp-ro:/rw/")
        assert out(engine.docker("exec", "cp-ro", "cat", "/rw/f")) == "f"
    finally:
        engine.docker("rm", "-f", "-v", "cp-ro")
        engine.docker("volume", "rm", "cpro", "cprw", check=False)
