"""A private systemd-journald for tests, in a mount namespace of its own.

journald needs no systemd around it: started bare it creates its sockets
in /run/systemd/journal (socket, stdout, dev-log, io.systemd.journal) and
keeps a volatile journal in /run/log/journal/<machine-id>. Its only
argument would be a journal namespace name, so it is given none. Here
/run/systemd and /run/log of a private mount namespace are bind mounts of
the test's own directories: the host's /run is left as it is, and the
journal files can be read from the host through those directories. A
drop-in in the private /run/systemd/journald.conf.d keeps it off the
kernel's log and off the console, syslog and wall; its own messages go to
its stderr, a file of the test's, rather than to the kernel's log.

Processes that should log into this journal run in its namespace:
`PrivateJournal.enter()` is the command prefix for it (nsenter).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.polling import wait_for
from tests.support.processes import stop_process

JOURNALD = Path("/lib/systemd/systemd-journald")
_SETTINGS = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
"""


@dataclass
class PrivateJournal:
    root: Path
    process: subprocess.Popen

    @property
    def socket(self) -> Path:
        """The native socket, as seen from the host."""
        return self.root / "systemd" / "journal" / "socket"

    @property
    def directory(self) -> Path:
        """The journal files, as seen from the host (`journalctl -D`)."""
        machine_id = Path("/etc/machine-id").read_text().strip()
        return self.root / "log" / "journal" / machine_id

    def enter(self) -> list[str]:
        """The command prefix that runs a command in the journal's namespace."""
        return ["nsenter", f"--mount=/proc/{self.process.pid}/ns/mnt", "--"]

    def entries(self, *matches: str) -> list[dict[str, str]]:
        """The journal's entries matching `FIELD=value` ones, as `journalctl -o json
        --all` prints them (long values in full), after journald has written
        what it has received."""
        subprocess.run([*self.enter(), "journalctl", "--sync"], check=True,
                       capture_output=True)
        result = subprocess.run(["journalctl", "-D", str(self.directory), "-o", "json",
                                 "--all", "--no-pager", *matches], check=True,
                                capture_output=True)
        return [json.loads(line) for line in result.stdout.splitlines()]


@contextlib.contextmanager
def private_journal() -> Iterator[PrivateJournal]:
    root = Path(tempfile.mkdtemp(prefix="berth-journal-"))
    (root / "log").mkdir()
    settings = root / "systemd" / "journald.conf.d"
    settings.mkdir(parents=True)
    (settings / "berth-test.conf").write_text(_SETTINGS)
    script = (f"mount --bind {root / 'systemd'} /run/systemd && "
              f"mount --bind {root / 'log'} /run/log && exec {JOURNALD}")
    with (root / "journald.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "SYSTEMD_LOG_TARGET": "console"})
    journal = PrivateJournal(root, process)
    try:
        wait_for(lambda: journal.socket.exists() or process.poll() is not None,
                 timeout=30, message="journald's socket")
        if process.poll() is not None:
            raise RuntimeError(f"journald did not start:\n"
                               f"{(root / 'journald.log').read_text(errors='replace')}")
        yield journal
    finally:
        stop_process(process)
        shutil.rmtree(root, ignore_errors=True)


