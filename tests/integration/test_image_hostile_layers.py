"""Images whose layers aim outside the engine (issue 12.1): `docker pull`
(from a registry seeded by skopeo), `docker load` and `docker import` of each
refuse it with a 400-class error naming the entry, register nothing, leave no
layer dir, and nothing appears on the host (a temp dir stands for the host
directory the layer aims at; /etc/shadow keeps its link count)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.engine import Engine
from tests.support.images import image_archive
from tests.support.registry import Registry, skopeo_copy

HOST = "/{host}"  # the test's host directory ({host}: its path without the leading /)


def _relative(host: Path) -> str:
    return str(host).lstrip("/")


def _layer(*entries: tuple[str, bytes, str], host: Path) -> bytes:
    """A layer tar of (name, type, link target) entries, {host} in them
    formatted; regular files hold b"pwned"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name.format(host=_relative(host)))
            info.type = kind
            info.linkname = link.format(host=_relative(host))
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = b"pwned" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


FILE, DIR, SYMLINK, HARDLINK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
UP = "../" * 24
# name: (entries of the one layer, the error message)
HOSTILE = {
    "absolute-symlink-parent": (
        [("lnk", SYMLINK, HOST), ("lnk/NEWDIR/deeper/file", FILE, "")],
        'invalid layer: entry "lnk/NEWDIR/deeper/file" goes through the symlink "lnk", '
        "which could lead outside the layer"),
    "relative-symlink-parent": (
        [("up", SYMLINK, UP + "{host}"), ("up/NEWDIR/file", FILE, "")],
        'invalid layer: entry "up/NEWDIR/file" goes through the symlink "up"'),
    "dot-dot-entry": (
        [(UP + "{host}/NEWFILE", FILE, "")],
        'invalid layer: entry "' + UP + '{host}/NEWFILE" leads outside the layer'),
    "hard-link-to-shadow": (
        [("shadow", HARDLINK, "/etc/shadow")],
        'invalid layer: hard link "shadow" -> "/etc/shadow": no such entry in the layer'),
    "whiteout-through-symlink": (
        [("lnk", SYMLINK, HOST), ("lnk/.wh.keep", FILE, "")],
        'invalid layer: entry "lnk/.wh.keep" goes through the symlink "lnk"'),
    "opaque-through-symlink": (
        [("lnk", SYMLINK, HOST), ("lnk/.wh..wh..opq", FILE, "")],
        'invalid layer: entry "lnk/.wh..wh..opq" goes through the symlink "lnk"'),
}


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The host directory the layers aim at, holding one file to keep."""
    directory = tmp_path / "host"
    directory.mkdir()
    (directory / "keep").write_text("keep")
    return directory


def _expected(case: str, host: Path) -> str:
    return HOSTILE[case][1].format(host=_relative(host))


def _state(engine: Engine) -> tuple[set[str], set[str]]:
    """The engine's image IDs and layer dirs."""
    images = {image.id for image in engine.client().images.list(all=True)}
    return images, set(os.listdir(engine.data_root / "image" / "layers"))


def _assert_untouched(host: Path, shadow_links: int) -> None:
    assert os.listdir(host) == ["keep"]
    assert (host / "keep").read_text() == "keep"
    with pytest.raises(OSError):
        os.getxattr(host, "trusted.overlay.opaque")
    assert os.stat("/etc/shadow").st_nlink == shadow_links


def _refused(engine: Engine, host: Path, attempt: Callable[[], str], message: str) -> None:
    """`attempt` fails with `message` and leaves the engine and host as they were."""
    shadow_links = os.stat("/etc/shadow").st_nlink
    before = _state(engine)
    error = attempt()
    _assert_untouched(host, shadow_links)
    assert _state(engine) == before
    assert message in error
    assert str(engine.root) not in error


def _post(engine: Engine, path: str, params: dict[str, str], body: bytes) -> str:
    """POST a tar; the answer must be a 400 whose message is returned."""
    client = engine.client()
    response = client.api._post(client.api._url(path), params=params, data=body,
                                headers={"Content-Type": "application/x-tar"})
    assert response.status_code == 400, response.text
    return response.json()["message"]


@pytest.mark.parametrize("case", HOSTILE)
def test_load_refuses(engine: Engine, host: Path, case: str) -> None:
    archive = image_archive([_layer(*HOSTILE[case][0], host=host)], [f"hostile/{case}:1"])
    _refused(engine, host, lambda: _post(engine, "/images/load", {}, archive),
             _expected(case, host))


@pytest.mark.parametrize("case", HOSTILE)
def test_import_refuses(engine: Engine, host: Path, case: str) -> None:
    layer = _layer(*HOSTILE[case][0], host=host)
    _refused(engine, host, lambda: _post(engine, "/images/create",
                                         {"fromSrc": "-", "repo": f"hostile/{case}"}, layer),
             _expected(case, host))


@pytest.mark.parametrize("case", HOSTILE)
def test_pull_refuses(engine: Engine, registry: Registry, host: Path, tmp_path: Path,
                      case: str) -> None:
    """A pull's errors come in its JSON stream once it has started (HTTP
    200, as in Docker): the CLI fails with the message."""
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(image_archive([_layer(*HOSTILE[case][0], host=host)], ["hostile:1"]))
    name = f"{registry.address}/hostile/{case}:1"
    skopeo_copy(f"docker-archive:{archive}", f"docker://{name}")

    def pull() -> str:
        result = engine.docker("pull", name, check=False)
        assert result.returncode != 0
        return result.stderr.decode()
    _refused(engine, host, pull, _expected(case, host))


def test_a_later_layer_replaces_a_symlink_with_a_directory(
        engine: Engine, registry: Registry, host: Path, tmp_path: Path) -> None:
    """Each layer unpacks in its own dir, so the directory and its file land
    in the upper layer's dir; the lower layer's symlink is not followed."""
    layers = [_layer(("lnk", SYMLINK, HOST), host=host),
              _layer(("lnk", DIR, ""), ("lnk/NEWDIR/file", FILE, ""), host=host)]
    archive = tmp_path / "replaced.tar"
    archive.write_bytes(image_archive(layers, ["replaced:1"]))
    name = f"{registry.address}/replaced/img:1"
    skopeo_copy(f"docker-archive:{archive}", f"docker://{name}")
    shadow_links = os.stat("/etc/shadow").st_nlink
    for add, image in (("pull", name), ("load", "replaced:1")):
        engine.docker(*([add, name] if add == "pull" else [add, "-i", str(archive)]))
        layer_dirs = [p for p in (engine.data_root / "image" / "layers").iterdir()
                      if not p.name.startswith(".") and p.name != "empty"]
        assert sorted((p / "lnk").is_symlink() for p in layer_dirs) == [False, True]
        upper = next(p for p in layer_dirs if not (p / "lnk").is_symlink())
        assert (upper / "lnk" / "NEWDIR" / "file").read_bytes() == b"pwned"
        _assert_untouched(host, shadow_links)
        engine.docker("rmi", image)
