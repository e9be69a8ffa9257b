"""Read-only view of an image's file system from layer directories, as
overlayfs merges them: upper layers win, a 0/0 character device is a
whiteout, a directory with trusted.overlay.opaque=y hides lower layers. The
builder's directories are its own copies of images (unpack_tree), never the
image service's layer directories."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from services.common import scoped
from services.common.whiteouts import is_opaque, is_whiteout, is_whiteout_at


def resolve_in_scope(path: str, find: Callable[[list[str]], Path | None]) -> list[str]:
    """`path` as components with every symlink followed inside the tree that
    `find` looks components up in (services.common.scoped). A missing
    component ends the walk as is."""
    def read_link(parts: list[str]) -> str | None:
        host = find(parts)
        return os.readlink(host) if host is not None and host.is_symlink() else None
    return scoped.resolve(path, read_link)


def _in_layer(layer: Path, parts: list[str]) -> tuple[Path | None, bool]:
    """One layer's own entry for `parts` (never through a symlink), and
    whether it hides the layers below (a whiteout, a non-directory on the
    way, or an opaque directory)."""
    current = layer
    for index, part in enumerate(parts):
        parent, current = current, current / part
        try:
            info = os.lstat(current)
        except OSError:
            return None, index > 0 and is_opaque(parent)
        if is_whiteout(info):
            return None, True
        if index < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
            return None, True
    return current, True


class RootfsView:
    def __init__(self, lower_dirs: list[str]) -> None:
        self.layers = [Path(d) for d in lower_dirs]  # topmost first

    def _find(self, parts: list[str]) -> Path | None:
        for layer in self.layers:
            found, hides = _in_layer(layer, parts)
            if found is not None or hides:
                return found
        return None

    def lookup(self, path: str) -> Path | None:
        """The host path that holds `path` (absolute in the image), symlinks
        followed inside the image."""
        if not self.layers:
            return None
        return self._find(resolve_in_scope(path, self._find))

    def is_dir(self, path: str) -> bool:
        found = self.lookup(path)
        return found is not None and found.is_dir() and not found.is_symlink()

    def exists(self, path: str) -> bool:
        return self.lookup(path) is not None

    def read_text(self, path: str) -> str:
        found = self.lookup(path)
        return found.read_text(errors="replace") if found and found.is_file() else ""

    def tree(self, path: str) -> dict[str, Path]:
        """Every entry under directory `path`: relative name -> host path."""
        entries: dict[str, Path] = {}
        base = resolve_in_scope(path, self._find)
        for layer in reversed(self.layers):
            top, hides = _in_layer(layer, base)
            if top is None or not top.is_dir() or top.is_symlink():
                if hides:
                    entries.clear()
                continue
            if is_opaque(top):
                entries.clear()
            for dirpath, dirnames, filenames in os.walk(top):
                rel_dir = os.path.relpath(dirpath, top)
                if rel_dir != "." and is_opaque(Path(dirpath)):
                    _drop_below(entries, rel_dir, keep_self=True)
                for name in dirnames + filenames:
                    rel = os.path.normpath(os.path.join(rel_dir, name))
                    host = Path(dirpath) / name
                    if is_whiteout_at(host):
                        _drop_below(entries, rel, keep_self=False)
                    else:
                        entries[rel] = host
        return dict(sorted(entries.items()))


def _drop_below(entries: dict[str, Path], rel: str, keep_self: bool) -> None:
    prefix = rel + "/"
    for key in [k for k in entries if k.startswith(prefix) or (k == rel and not keep_self)]:
        del entries[key]



def unpack_tree(archive: Path, target: Path) -> None:
    """Extract a file system tar into `target` as is: owners, modes (setuid
    included), devices and links; names that would land outside are refused."""
    target.mkdir(parents=True)

    def checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        tarfile.tar_filter(member, dest)
        return member
    with tarfile.open(archive) as tar:
        tar.extractall(target, numeric_owner=True, filter=checked)
