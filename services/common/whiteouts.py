"""How a layer records what it deletes. In a layer directory (overlayfs) a
deleted path is a 0/0 character device and a directory that hides the layers
below carries trusted.overlay.opaque=y; in a layer tar they are `.wh.<name>`
and `<dir>/.wh..wh..opq` entries."""

from __future__ import annotations

import os
import stat

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

StrPath = str | os.PathLike[str]


def is_whiteout(info: os.stat_result) -> bool:
    """Whether an lstat result is an overlayfs whiteout."""
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def is_opaque(directory: StrPath) -> bool:
    """Whether `directory` (not followed) hides the layers below it."""
    try:
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def make_whiteout(path: StrPath, dir_fd: int | None = None) -> None:
    """A whiteout at `path`, relative to the directory `dir_fd` when given."""
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=dir_fd)


def make_opaque(directory: StrPath | int) -> None:
    """Mark `directory` (a path, or a descriptor open on it) opaque."""
    os.setxattr(directory, OPAQUE_XATTR, b"y")
