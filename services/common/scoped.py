"""Paths resolved inside a tree as if it were the root (securejoin semantics,
Docker's FollowSymlinkInScope): `..` stops at the top and symbolic links,
absolute or relative, are followed inside the tree, so nothing outside it is
ever reached. The tree is seen through a callback, so one walk serves a plain
directory (docker cp), a build context and an image's stacked layers."""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable

from services.common.errors import InvalidArgument

# filepath-securejoin's and continuity's limit on links followed in one path.
MAX_SYMLINKS = 255

# The target of the symlink at these components, or None when there is none.
LinkReader = Callable[[list[str]], str | None]


def resolve(path: str, read_link: LinkReader, follow_last: bool = True) -> list[str]:
    """`path` as components with its symlinks resolved in scope. A component
    that is missing or no symlink stays as is; with `follow_last` false a
    trailing symlink is kept rather than followed."""
    pending = deque(part for part in path.split("/") if part)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = read_link([*resolved, part]) if follow_last or pending else None
        if target is None:
            resolved.append(part)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise InvalidArgument(f"{path}: too many levels of symbolic links")
        if target.startswith("/"):
            resolved.clear()
        pending.extendleft(reversed([part for part in target.split("/") if part]))
    return resolved


def directory_links(root: str) -> LinkReader:
    """The LinkReader of a plain directory tree."""
    def read_link(parts: list[str]) -> str | None:
        candidate = os.path.join(root, *parts)
        try:
            info = os.lstat(candidate)
            return os.readlink(candidate) if stat.S_ISLNK(info.st_mode) else None
        except OSError:
            # Missing, a name too long, or a /proc link with no target for
            # us (/proc/self of another PID namespace): no link to follow.
            return None
    return read_link


def secure_join(root: str, unsafe_path: str, follow_last: bool = True) -> str:
    """`unsafe_path` inside directory `root`, symlinks resolved as if root were /."""
    resolved = resolve(unsafe_path, directory_links(root), follow_last)
    return os.path.join(root, *resolved) if resolved else root
