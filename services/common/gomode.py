"""Go's os.FileMode bits, which Docker's path stat (PathStat, the
X-Docker-Container-Path-Stat header) carries instead of a POSIX st_mode."""

from __future__ import annotations

import stat

DIR = 1 << 31
SYMLINK = 1 << 27
DEVICE = 1 << 26
NAMED_PIPE = 1 << 25
SOCKET = 1 << 24
SETUID = 1 << 23
SETGID = 1 << 22
CHAR_DEVICE = 1 << 21
STICKY = 1 << 20
IRREGULAR = 1 << 19
NOT_REGULAR = DIR | SYMLINK | DEVICE | NAMED_PIPE | SOCKET | CHAR_DEVICE | IRREGULAR


def from_st_mode(mode: int) -> int:
    """Python's st_mode as Go's os.FileMode bits."""
    result = mode & 0o777
    kinds = {stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK, stat.S_IFIFO: NAMED_PIPE,
             stat.S_IFSOCK: SOCKET, stat.S_IFBLK: DEVICE, stat.S_IFCHR: DEVICE | CHAR_DEVICE}
    result |= kinds.get(stat.S_IFMT(mode), 0)
    if mode & stat.S_ISUID:
        result |= SETUID
    if mode & stat.S_ISGID:
        result |= SETGID
    if mode & stat.S_ISVTX:
        result |= STICKY
    return result
