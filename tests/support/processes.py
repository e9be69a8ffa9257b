"""Stopping the helper processes the tests start (engines, dockerd, journald...)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(process: subprocess.Popen, group: bool = False, timeout: float = 30
                 ) -> int:
    """SIGTERM, then SIGKILL after `timeout`: of the whole process group when
    `group` (a leader started with start_new_session takes its children
    along). Returns the exit status."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        return process.wait()
