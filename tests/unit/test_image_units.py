"""Unit tests of the image service's pure parts: references, registry
endpoints, safe layer extraction, timestamps."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.image import reference
from services.image.images import created_ns
from services.image.layers import chain_ids, unpack
from services.image.registry import Registries, parse_challenge


@pytest.mark.parametrize(("text", "canonical", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000/a/b:c"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
    ("x@sha256:" + "a" * 64, "docker.io/library/x@sha256:" + "a" * 64, "x@sha256:" + "a" * 64),
])
def test_reference_normalisation(text: str, canonical: str, familiar: str) -> None:
    ref = reference.parse(text)
    assert str(ref) == canonical
    assert ref.familiar == familiar


@pytest.mark.parametrize("text", ["UPPER:case", "a b", "x:", "x@sha256:zz", ":tag", "x:a/b"])
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        reference.parse(text)


def test_parse_repository_and_ids() -> None:
    assert str(reference.parse_repository("busybox", "1")) == "docker.io/library/busybox:1"
    with pytest.raises(InvalidArgument):
        reference.parse_repository("busybox", "bad tag")
    assert reference.looks_like_id("abc123")
    assert reference.looks_like_id("sha256:" + "f" * 64)
    assert not reference.looks_like_id("busybox")


def test_registry_endpoints() -> None:
    registries = Registries({"insecure-registries": ["10.0.0.0/8", "myreg:5000"],
                             "registry-mirrors": ["http://mirror.local:5000/"]})
    assert registries.base_urls("127.0.0.1:5000") == ["https://127.0.0.1:5000",
                                                      "http://127.0.0.1:5000"]
    assert registries.base_urls("localhost:5000") == ["https://localhost:5000",
                                                      "http://localhost:5000"]
    assert registries.base_urls("10.1.2.3:5000") == ["https://10.1.2.3:5000",
                                                     "http://10.1.2.3:5000"]
    assert registries.base_urls("myreg:5000") == ["https://myreg:5000", "http://myreg:5000"]
    assert registries.base_urls("example.com") == ["https://example.com"]
    assert registries.base_urls("docker.io") == ["http://mirror.local:5000",
                                                 "https://registry-1.docker.io"]
    asyncio.run(registries.close())


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth/token", "service": "reg",
                      "scope": "repository:a:pull"}


def test_chain_ids() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    chains = chain_ids([a, b])
    assert chains[0] == a and chains[1].startswith("sha256:") and chains[1] != b


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o4755 if kind in (tarfile.REGTYPE, tarfile.LNKTYPE) else 0o755
    info.uid = info.gid = 1234
    return info


def test_unpack_whiteouts_modes_and_owners(tmp_path: Path) -> None:
    source = _tar((_member("d", tarfile.DIRTYPE), b""), (_member("d/.wh..wh..opq"), b""),
                  (_member("d/.wh.gone"), b""), (_member("d/file"), b"data"),
                  (_member("link", tarfile.SYMTYPE, "/etc/passwd"), b""),
                  (_member("hard", tarfile.LNKTYPE, "d/file"), b""))
    result = unpack(source, tmp_path)
    assert result.size == 4 + len("/etc/passwd")
    assert os.getxattr(tmp_path / "d", "trusted.overlay.opaque") == b"y"
    gone = os.lstat(tmp_path / "d" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    info = os.stat(tmp_path / "d" / "file")
    assert info.st_mode & 0o4000 and info.st_uid == 1234
    assert os.readlink(tmp_path / "link") == "/etc/passwd"
    assert os.stat(tmp_path / "hard").st_ino == info.st_ino


@pytest.mark.parametrize("members", [
    [(_member("../x"), b"x")],
    [(_member("a/../../x"), b"x")],
    [(_member("hard", tarfile.LNKTYPE, "../../etc/passwd"), b"")],
    [(_member("esc", tarfile.SYMTYPE, "/"), b""), (_member("esc/tmp/pwned"), b"x")],
])
def test_unpack_refuses_escapes(tmp_path: Path, members: list) -> None:
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(InvalidArgument):
        unpack(_tar(*members), dest)
    assert not (tmp_path / "x").exists()
    assert not Path("/tmp/pwned").exists()


def test_unpack_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    dest = tmp_path / "layer"
    dest.mkdir()
    unpack(_tar((_member("f", tarfile.SYMTYPE, str(outside)), b""), (_member("f"), b"new")),
           dest)
    assert outside.read_text() == "keep"
    assert (dest / "f").read_bytes() == b"new"


def test_created_times() -> None:
    assert created_ns({"created": "2023-11-14T22:13:20Z"}) == 1_700_000_000_000_000_000
    assert created_ns({"created": "2023-11-14T22:13:20.5Z"}) == 1_700_000_000_500_000_000
    assert created_ns({}) == 0
