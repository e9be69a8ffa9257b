"""Layer extraction (services/image/extraction.py through layers.unpack):
hostile tars write nothing outside the layer directory and fail with a clear
message that names the entry and no host path."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.common.whiteouts import OPAQUE_XATTR
from services.image.layers import unpack


def _tar(*members: tarfile.TarInfo, data: bytes = b"x") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
           mtime: int = 1700000000) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = mtime
    return info


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory a hostile layer aims at, with one file in it."""
    directory = tmp_path / "host"
    directory.mkdir()
    (directory / "keep").write_text("keep")
    return directory


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    directory = tmp_path / "layer"
    directory.mkdir()
    return directory


def _refused(source: io.BytesIO, layer: Path) -> str:
    with pytest.raises(InvalidArgument) as caught:
        unpack(source, layer)
    message = caught.value.message
    assert str(layer.parent) not in message
    return message


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert (outside / "keep").read_text() == "keep"
    with pytest.raises(OSError):
        os.getxattr(outside, OPAQUE_XATTR)


@pytest.mark.parametrize("link", ["{outside}", "../../host", "sub"])
def test_no_entry_is_written_through_a_symlink(layer: Path, outside: Path, link: str) -> None:
    members = [_entry("sub", tarfile.DIRTYPE),
               _entry("lnk", tarfile.SYMTYPE, link.format(outside=outside)),
               _entry("lnk/NEWDIR/deeper/file")]
    message = _refused(_tar(*members), layer)
    assert message == ('invalid layer: entry "lnk/NEWDIR/deeper/file" goes through the '
                       'symlink "lnk", which could lead outside the layer')
    _untouched(outside)


def test_symlinks_are_stored_as_they_are(layer: Path) -> None:
    """As Docker (which unpacks in a chroot) keeps them: they resolve in the container."""
    unpack(_tar(_entry("up", tarfile.SYMTYPE, "../../../etc"),
                _entry("abs", tarfile.SYMTYPE, "/etc")), layer)
    assert os.readlink(layer / "up") == "../../../etc"
    assert os.readlink(layer / "abs") == "/etc"


@pytest.mark.parametrize("name", ["../x", "a/../../x", "./../x"])
def test_names_leaving_the_root_are_refused(layer: Path, name: str) -> None:
    message = _refused(_tar(_entry(name)), layer)
    assert message == f'invalid layer: entry "{name}" leads outside the layer'
    assert not (layer.parent / "x").exists()


def test_names_are_cleaned_as_docker_does(layer: Path) -> None:
    unpack(_tar(_entry("/abs"), _entry("a/../b"), _entry("/../c")), layer)
    assert sorted(os.listdir(layer)) == ["abs", "b", "c"]


def test_hard_links_reach_only_entries_of_the_layer(layer: Path, outside: Path) -> None:
    shadow = os.stat("/etc/shadow").st_nlink
    message = _refused(_tar(_entry("h", tarfile.LNKTYPE, "/etc/shadow")), layer)
    assert message == ('invalid layer: hard link "h" -> "/etc/shadow": no such entry in '
                       'the layer')
    message = _refused(_tar(_entry("h", tarfile.LNKTYPE, "../../etc/passwd")), layer)
    assert message.endswith("leads outside the layer")
    through = [_entry("lnk", tarfile.SYMTYPE, str(outside)),
               _entry("h", tarfile.LNKTYPE, "lnk/keep")]
    assert "goes through the symlink" in _refused(_tar(*through), layer)
    assert os.stat("/etc/shadow").st_nlink == shadow
    assert os.stat(outside / "keep").st_nlink == 1


def test_a_hard_link_to_a_symlink_links_the_symlink(layer: Path, outside: Path) -> None:
    unpack(_tar(_entry("s", tarfile.SYMTYPE, str(outside / "keep")),
                _entry("h", tarfile.LNKTYPE, "s"), _entry("etc/shadow"),
                _entry("abs", tarfile.LNKTYPE, "/etc/shadow")), layer)
    assert os.readlink(layer / "h") == str(outside / "keep")
    assert os.stat(outside / "keep").st_nlink == 1
    assert os.stat(layer / "abs").st_ino == os.stat(layer / "etc" / "shadow").st_ino


@pytest.mark.parametrize("name", ["lnk/.wh.keep", "lnk/.wh..wh..opq", "../.wh.keep",
                                  ".wh..", ".wh..."])
def test_whiteouts_stay_in_the_layer(layer: Path, outside: Path, name: str) -> None:
    message = _refused(_tar(_entry("lnk", tarfile.SYMTYPE, str(outside)), _entry(name)),
                       layer)
    assert f'"{name}"' in message
    _untouched(outside)


def test_a_parent_that_is_a_file_is_an_error(layer: Path) -> None:
    message = _refused(_tar(_entry("f"), _entry("f/x")), layer)
    assert message == 'invalid layer: entry "f/x": "f" is not a directory'


def test_entries_types_and_directory_times(layer: Path) -> None:
    fifo, device = _entry("d/fifo", tarfile.FIFOTYPE), _entry("d/null", tarfile.CHRTYPE)
    device.devmajor, device.devminor = 1, 3
    unpack(_tar(_entry("d", tarfile.DIRTYPE, mtime=1000), _entry("d/file", mtime=2000),
                fifo, device, _entry("implied/file")), layer)
    assert os.stat(layer / "d").st_mtime == 1000
    assert os.stat(layer / "d" / "file").st_mtime == 2000
    assert stat.S_ISFIFO(os.lstat(layer / "d" / "fifo").st_mode)
    assert os.lstat(layer / "d" / "null").st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(os.stat(layer / "implied").st_mode) == 0o755


def test_a_later_entry_replaces_a_directory_and_a_symlink(layer: Path, outside: Path) -> None:
    unpack(_tar(_entry("d", tarfile.DIRTYPE), _entry("d/file"), _entry("d"),
                _entry("lnk", tarfile.SYMTYPE, str(outside)), _entry("lnk", tarfile.DIRTYPE),
                _entry("lnk/file")), layer)
    assert (layer / "d").is_file()
    assert (layer / "lnk" / "file").is_file() and not (layer / "lnk").is_symlink()
    _untouched(outside)
