"""The OCI runtime (runc) and one conmon per container.

conmon runs `runc create`, holds the container's stdio or pty, writes the
log, serves the attach socket and records the exit code in the exit
directory. The service never keeps a process per container: it watches each
conmon through a pidfd on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import Conflict, Internal

STDOUT, STDERR = 2, 3                # first byte of conmon's attach-socket packets
_RESIZE_EVENT = 1                    # conmon's ctl fifo message types
_REOPEN_LOG_EVENT = 2


class CreateFailed(Exception):
    """`runc create` refused the container; the message is runc's."""


@dataclass
class Bundle:
    """Where one container's runtime files live."""

    path: Path
    log_file: Path | None = None    # LogConfig k8s-file's path; else in the bundle

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def log(self) -> Path:
        return self.log_file or self.path / "container.log"

    @property
    def conmon_pidfile(self) -> Path:
        return self.path / "conmon.pid"

    @property
    def ctl(self) -> Path:
        return self.path / "ctl"


@dataclass
class ConmonOptions:
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_size_max: int = 0
    keep_log: bool = True              # False: the `none` log driver, no log file


class Runtime:
    def __init__(self, exec_root: Path, runtime: str = "runc") -> None:
        self.binary = runtime if "/" in runtime else _which(runtime)
        self.root = exec_root / "runc"
        self.exits = exec_root / "exits"
        self.sockets = exec_root / "attach"
        self.persist = exec_root / "persist"
        for path in (self.root, self.exits, self.sockets, self.persist):
            path.mkdir(parents=True, exist_ok=True)

    async def create(self, cid: str, bundle: Bundle, opts: ConmonOptions) -> tuple[int, int]:
        """Run conmon, which runs `runc create`; returns (container pid, conmon pid)."""
        self.forget_exit(cid)
        persist = self.persist / cid
        persist.mkdir(exist_ok=True)
        args = ["conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
                "-r", self.binary, "-b", str(bundle.path),
                "-p", str(bundle.path / "pidfile"), "-P", str(bundle.conmon_pidfile),
                "--exit-dir", str(self.exits), "--socket-dir-path", str(self.sockets),
                "--full-attach", "-l", f"k8s-file:{bundle.log}" if opts.keep_log else "none:",
                "-0", str(persist),
                "--runtime-arg", f"--root={self.root}", "--syslog", "--log-level", "error"]
        if opts.log_size_max > 0:
            args += ["--log-size-max", str(opts.log_size_max)]
        if opts.tty:
            args.append("-t")
        if opts.stdin:
            args.append("-i")
            if not opts.stdin_once:
                args.append("--leave-stdin-open")
        read_end, write_end = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *args, pass_fds=(write_end,), env={**os.environ, "_OCI_SYNCPIPE": str(write_end)},
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
                cwd=bundle.path)  # conmon also drops an `oom` file in its cwd
            os.close(write_end)
            write_end = -1
            _, stderr = await process.communicate()
            reply = await asyncio.to_thread(_read_line, read_end)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if not reply:
            raise Internal(f"conmon failed: {stderr.decode(errors='replace').strip()}")
        message = json.loads(reply.splitlines()[0])
        if message.get("data", -1) < 0:
            await self.delete(cid, force=True)
            raise CreateFailed(runc_message(message.get("message", "runc create failed")))
        conmon_pid = int(bundle.conmon_pidfile.read_text())
        return int(message["data"]), conmon_pid

    async def start(self, cid: str) -> None:
        await self._runc("start", cid)

    async def kill(self, cid: str, signum: int, all_processes: bool = False) -> None:
        await self._runc("kill", *(["--all"] if all_processes else []), cid, str(signum))

    async def pause(self, cid: str) -> None:
        await self._runc("pause", cid)

    async def resume(self, cid: str) -> None:
        await self._runc("resume", cid)

    async def delete(self, cid: str, force: bool = False) -> None:
        with contextlib.suppress(Internal, Conflict):
            await self._runc("delete", *(["--force"] if force else []), cid)
        self.forget_exit(cid)

    async def status(self, cid: str) -> str:
        """runc's status of the container ("running", "paused", ...), "" when unknown."""
        try:
            out = await self._runc("state", cid)
        except (Internal, Conflict):
            return ""
        return json.loads(out).get("status", "")

    def exit_code(self, cid: str) -> int | None:
        try:
            return int((self.exits / cid).read_text().strip())
        except (OSError, ValueError):
            return None

    def oom_killed(self, cid: str) -> bool:
        return (self.persist / cid / "oom").exists()

    def forget_exit(self, cid: str) -> None:
        (self.exits / cid).unlink(missing_ok=True)
        for name in ("oom", "exit"):
            (self.persist / cid / name).unlink(missing_ok=True)

    def remove_state(self, cid: str) -> None:
        self.forget_exit(cid)
        with contextlib.suppress(OSError):
            (self.persist / cid).rmdir()
        (self.sockets / cid).unlink(missing_ok=True)

    @staticmethod
    def conmon_alive(pid: int, cid: str) -> bool:
        """Whether `pid` is still the conmon of container `cid` (pids get reused)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"conmon" in cmdline and cid.encode() in cmdline

    @staticmethod
    async def wait_exit(pid: int) -> None:
        """Return when process `pid` (not our child) exits: a pidfd on the event loop."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    @staticmethod
    def connect_attach(bundle: Bundle) -> socket.socket:
        """A non-blocking connection to conmon's attach socket.

        The socket's path can exceed the 108 bytes of sun_path, so connect
        through /proc/self/fd of its directory.
        """
        dir_fd = os.open(bundle.path, os.O_PATH)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(f"/proc/self/fd/{dir_fd}/attach")
        except OSError as exc:
            sock.close()
            raise Conflict(f"cannot attach to container: {exc}") from exc
        finally:
            os.close(dir_fd)
        sock.setblocking(False)
        return sock

    @staticmethod
    def resize(bundle: Bundle, height: int, width: int) -> None:
        """Ask conmon to resize the container's pty."""
        _control(bundle, f"{_RESIZE_EVENT} {height} {width}\n")

    @staticmethod
    def rotate_log(bundle: Bundle, rename: Callable[[], None]) -> None:
        """`rename` the log files away, then have conmon start a new log file.

        The control fifo is opened first: it fails once conmon is gone, and
        then nothing is renamed.
        """
        fd = _open_control(bundle)
        try:
            rename()
            os.write(fd, f"{_REOPEN_LOG_EVENT} 0 0\n".encode())
        finally:
            os.close(fd)

    async def _runc(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            self.binary, "--root", str(self.root), *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        if process.returncode != 0:
            message = runc_message(err.decode(errors="replace"))
            if any(gone in message for gone in _NOT_RUNNING):
                raise Conflict(message)
            raise Internal(f"runc {args[0]} failed: {message}")
        return out.decode()


# runc's words for a container whose process is gone: a kill racing the
# process's own exit gets "unable to signal init: os: process already finished".
_NOT_RUNNING = ("not running", "does not exist", "process already finished")


def _which(name: str) -> str:
    for directory in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(":") + ["/usr/sbin"]:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit(f"berth: OCI runtime {name} not found")


def runc_message(stderr: str) -> str:
    """runc logs `time=... level=error msg="..."`; keep the message."""
    for line in reversed(stderr.strip().splitlines()):
        if 'msg="' in line:
            return line.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
        if line.strip():
            return line.strip()
    return "unknown error"


def _read_line(fd: int) -> bytes:
    """conmon's first sync message (it may keep the pipe open afterwards)."""
    chunks = []
    while (chunk := os.read(fd, 65536)) and not chunk.endswith(b"\n"):
        chunks.append(chunk)
    return b"".join(chunks) + chunk


def _control(bundle: Bundle, message: str) -> None:
    fd = _open_control(bundle)
    try:
        os.write(fd, message.encode())
    finally:
        os.close(fd)


def _open_control(bundle: Bundle) -> int:
    try:
        return os.open(bundle.ctl, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise Conflict(f"container is not running: {exc}") from exc


def signal_number(name: str) -> int:
    """KILL, SIGKILL, sigkill or 9 -> 9; ValueError when unknown."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
        raise ValueError(name)
    try:
        return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise ValueError(name) from None
