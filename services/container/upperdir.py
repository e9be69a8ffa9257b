"""What a container changed: the overlay upperdir read as Docker's changes
(docker diff) and as an image layer tar with whiteouts (docker commit).

In the upperdir a deleted path is a whiteout (a 0/0 character device) and a
directory that hides everything below it carries the opaque xattr; in a
layer tar these become `.wh.<name>` and `<dir>/.wh..wh..opq` entries.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.common.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX, is_opaque, is_whiteout
from services.container.archive import TarOutput

MODIFIED, ADDED, DELETED = 0, 1, 2

# Files the engine itself puts into every container (Docker keeps them in
# the hidden init layer), which neither docker diff nor commit reports.
ENGINE_PATHS = frozenset({
    "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/mtab", "/.dockerenv",
    "/dev", "/proc", "/sys", "/dev/console", "/dev/pts", "/dev/shm", "/dev/mqueue",
})


@dataclass(frozen=True)
class Change:
    path: str
    kind: int


def _walk(upper: str, excluded: frozenset[str]) -> Iterator[tuple[str, str, os.stat_result]]:
    """(container path, host path, lstat) for the upperdir, parents first."""
    pending = [""]
    while pending:
        directory = pending.pop()
        names = sorted(os.listdir(os.path.join(upper, directory.lstrip("/"))), reverse=True)
        for name in names:
            path = f"{directory}/{name}"
            if path in excluded:
                continue
            host_path = os.path.join(upper, path.lstrip("/"))
            info = os.lstat(host_path)
            yield path, host_path, info
            if stat.S_ISDIR(info.st_mode):
                pending.append(path)


def _lower_info(lowers: list[str], path: str) -> os.stat_result | None:
    """The path as the image layers show it (topmost first), None if absent."""
    for lower in lowers:
        host_path = os.path.join(lower, path.lstrip("/"))
        try:
            info = os.lstat(host_path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        return None if is_whiteout(info) else info
    return None


def _same_metadata(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)


def changes(upper: str, lowers: list[str], excluded: frozenset[str] = ENGINE_PATHS
            ) -> list[Change]:
    """Docker's container changes, sorted by path. A directory that exists in
    the image is reported only when something below it changed or its own
    metadata did, as overlay copies parents up for any change."""
    found: dict[str, int] = {}
    for path, host_path, info in sorted(_walk(upper, excluded)):
        lower = _lower_info(lowers, path)
        if is_whiteout(info):
            if lower is not None:
                found[path] = DELETED
            continue
        if stat.S_ISDIR(info.st_mode) and lower is not None and stat.S_ISDIR(lower.st_mode):
            if is_opaque(host_path) or not _same_metadata(info, lower):
                found[path] = MODIFIED
                _mark_parents(found, path, lowers)
            continue
        found[path] = ADDED if lower is None else MODIFIED
        _mark_parents(found, path, lowers)
    for path in [p for p, kind in found.items() if kind == DELETED]:
        _mark_parents(found, path, lowers)
    return [Change(path, kind) for path, kind in sorted(found.items())]


def _mark_parents(found: dict[str, int], path: str, lowers: list[str]) -> None:
    parent = os.path.dirname(path)
    while parent != "/" and parent not in found:
        found[parent] = MODIFIED if _lower_info(lowers, parent) is not None else ADDED
        parent = os.path.dirname(parent)


def write_layer_tar(upper: str, out: Callable[[bytes], object],
                    excluded: frozenset[str] = ENGINE_PATHS) -> None:
    """The upperdir as an image layer tar (whiteouts as .wh. entries)."""
    with tarfile.open(fileobj=TarOutput(out), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, host_path, info in sorted(_walk(upper, excluded)):
            name = path.lstrip("/")
            if is_whiteout(info):
                directory, base = os.path.split(name)
                tar.addfile(_marker(os.path.join(directory, WHITEOUT_PREFIX + base), info))
                continue
            member = tar.gettarinfo(host_path, arcname=name)
            if member is None:
                continue
            member.uname = member.gname = ""
            if member.isreg():
                with open(host_path, "rb") as content:
                    tar.addfile(member, content)
            else:
                tar.addfile(member)
            if member.isdir() and is_opaque(host_path):
                tar.addfile(_marker(os.path.join(name, OPAQUE_MARKER), info))


def _marker(name: str, info: os.stat_result) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.mtime = int(info.st_mtime)
    member.mode = 0o644
    return member
