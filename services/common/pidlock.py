"""Who owns what on an exec root: an flock on a file that names its holder.

The kernel drops an flock when the last descriptor of its open file goes
away, so a holder killed by SIGKILL never leaves a stale lock behind, and
the descriptor is close-on-exec, so no child (conmon, runc) keeps it alive.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class PidLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, note: str = "") -> bool:
        """Take the lock and write our PID (and `note`); False if it is held.
        The lock is ours until release() or, without one, until we exit."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {note}".strip().encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def is_held(self) -> bool:
        """Whether some process (this one included) holds the lock now."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def holder(self) -> tuple[str, str]:
        """(PID, note) the holder wrote; "unknown" while it is being written."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        pid, _, note = text.partition(" ")
        return pid or "unknown", note
