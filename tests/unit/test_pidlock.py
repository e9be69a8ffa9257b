"""PidLock: one holder at a time, named in the file, never inherited."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from services.common.pidlock import PidLock


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = PidLock(tmp_path / "x.lock"), PidLock(tmp_path / "x.lock")
    assert not first.is_held()
    assert first.acquire("unix:///run/x.sock")
    assert first.is_held()
    assert not second.acquire()
    assert second.holder() == (str(os.getpid()), "unix:///run/x.sock")
    first.release()
    assert not second.is_held()
    assert second.acquire()
    second.release()


def test_children_do_not_inherit_the_lock(tmp_path: Path) -> None:
    lock = PidLock(tmp_path / "x.lock")
    assert lock.acquire()
    child = subprocess.Popen(["sleep", "60"], close_fds=False)
    try:
        lock.release()
        assert not lock.is_held()
    finally:
        child.kill()
        child.wait()
