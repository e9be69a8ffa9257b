"""Exec instances: a process run inside a running container.

Each exec runs under its own conmon (`conmon --exec`), which runs `runc
exec` with a process spec derived from the container's, so the process joins
every namespace and the cgroup of the container. conmon talks to us through
three pipes: start (we say go), attach (its attach socket is ready) and sync
(first the exec's pid or runc's error, then the exit code).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Histogram

from berth.container.v1 import container_pb2
from services.common.errors import Conflict, NotFound
from services.common.tasks import keep_task
from services.container import runtime as oci
from services.container.configs import replace_or_append_env
from services.container.rootfs import resolve_user
from services.container.spec import ALL_CAPS, User

EXEC_STARTS = Counter("berth_container_exec_starts_total",
                      "Exec processes started in containers, by result.", ["result"])
EXEC_START_SECONDS = Histogram(
    "berth_container_exec_start_seconds", "Time to start an exec process (conmon, runc exec).",
    buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


@dataclass
class ExecStartFailed(Exception):
    """The process could not start; Docker's exit code for the reason.
    `internal`: our own failure, not the user's command or options."""

    message: str
    exit_code: int
    internal: bool = False


@dataclass
class Exec:
    id: str
    container_id: str
    config: container_pb2.ExecConfig
    run_started_ns: int = 0     # the container's run it was created in
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    started: bool = False
    session_dir: Path | None = None
    sync: asyncio.StreamReader | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def command(self) -> str:
        return " ".join(self.config.cmd)


def start_exit_code(message: str) -> int:
    """Docker's exit codes for a process that could not start."""
    if "permission denied" in message:
        return 126
    return 127 if re.search(r"not found|no such file or directory|not a directory",
                            message) else 126


def bounded_caps() -> list[str]:
    """Every capability this process may hand on (ALL_CAPS is in capability
    number order); a host can withhold some, and runc cannot grant those."""
    status = Path("/proc/self/status").read_text()
    bounding = int(status.split("CapBnd:")[1].split()[0], 16)
    return [name for number, name in enumerate(ALL_CAPS) if bounding >> number & 1]


def exec_user(user_spec: str, host: container_pb2.HostConfig) -> User:
    """The exec's user looked up again in the container's root ("/": the
    caller runs this chrooted into it) with the container's GroupAdd, as
    dockerd does for an exec."""
    return resolve_user(Path("/"), user_spec, list(host.group_add),
                        not host.strict_supplemental_groups)


def process_spec(container_process: dict, config: container_pb2.ExecConfig,
                 user: User | None) -> dict:
    """The container's process spec with the exec's command, env, user, dir."""
    process = json.loads(json.dumps(container_process))
    process.pop("consoleSize", None)
    process["args"] = list(config.cmd)
    process["terminal"] = config.tty
    env = process.get("env", [])
    if config.tty and not any(entry.startswith("TERM=") for entry in env):
        env = [*env, "TERM=xterm"]
    process["env"] = replace_or_append_env(env, list(config.env))
    if config.working_dir:
        process["cwd"] = config.working_dir
    if user is not None:
        process["user"] = {"uid": user.uid, "gid": user.gid}
        if user.additional_gids:
            process["user"]["additionalGids"] = user.additional_gids
    if config.privileged:
        caps = bounded_caps()
        process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    if len(config.console_size) == 2 and config.tty:
        process["consoleSize"] = {"height": config.console_size[0],
                                  "width": config.console_size[1]}
    return process


class ExecManager:
    """Exec instances live in memory, as Docker's do."""

    def __init__(self, exec_root: Path, runtime: oci.Runtime) -> None:
        self._dir = exec_root / "execs"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._runtime = runtime
        self._execs: dict[str, Exec] = {}
        self._watchers: set[asyncio.Task] = set()

    def sweep(self) -> None:
        """Remove the session dirs of execs that ended while the service was
        down (exec instances live in memory, so nobody else will)."""
        for session in self._dir.iterdir():
            try:
                os.kill(int((session / "pid").read_text()), 0)
            except (OSError, ValueError):
                shutil.rmtree(session, ignore_errors=True)

    def create(self, container_id: str, config: container_pb2.ExecConfig,
               run_started_ns: int = 0) -> Exec:
        record = Exec(id=secrets.token_hex(32), container_id=container_id, config=config,
                      run_started_ns=run_started_ns)
        self._execs[record.id] = record
        return record

    def get(self, exec_id: str) -> Exec:
        record = self._execs.get(exec_id)
        if record is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return record

    def of_container(self, container_id: str) -> list[Exec]:
        return [e for e in self._execs.values() if e.container_id == container_id]

    def forget(self, exec_id: str) -> None:
        self._execs.pop(exec_id, None)

    def forget_container(self, container_id: str) -> None:
        for record in self.of_container(container_id):
            del self._execs[record.id]

    async def start(self, record: Exec, process: dict, attach: bool,
                    timeout_seconds: int = 0) -> socket.socket | None:
        """Start the process; returns the attach socket when `attach`."""
        if record.running:
            raise Conflict(f"Error: Exec command {record.id} is already running")
        if record.started:
            raise Conflict(f"Error: Exec command {record.id} has already run")
        record.started = record.running = True
        session = self._dir / record.id
        session.mkdir(parents=True, exist_ok=True)
        record.session_dir = session
        began = time.perf_counter()
        try:
            sock = await self._launch(record, session, process, attach, timeout_seconds)
        except BaseException as exc:
            record.running = False
            record.done.set()
            shutil.rmtree(session, ignore_errors=True)
            EXEC_STARTS.labels("failed" if isinstance(exc, ExecStartFailed) else "error").inc()
            raise
        EXEC_STARTS.labels("started").inc()
        EXEC_START_SECONDS.observe(time.perf_counter() - began)
        return sock

    async def _launch(self, record: Exec, session: Path, process: dict, attach: bool,
                      timeout_seconds: int) -> socket.socket | None:
        (session / "process.json").write_text(json.dumps(process))
        (session / "exits").mkdir(exist_ok=True)
        args = ["conmon", "--api-version", "1", "-c", record.container_id, "-u", record.id,
                "-n", record.container_id, "-r", self._runtime.binary, "-b", str(session),
                "-p", str(session / "pid"), "--exit-dir", str(session / "exits"),
                "--socket-dir-path", str(session), "--full-attach", "-l", "none:",
                "--exec", "--exec-process-spec", str(session / "process.json"),
                "--runtime-arg", f"--root={self._runtime.root}", "--syslog",
                "--log-level", "error"]
        if record.config.tty:
            args.append("-t")
        if record.config.attach_stdin:
            args.append("-i")
        if attach:
            args.append("--exec-attach")
        if timeout_seconds:
            args += ["-T", str(timeout_seconds)]
        pipes = _Pipes()
        try:
            process_handle = await asyncio.create_subprocess_exec(
                *args, pass_fds=pipes.child_fds(), env={**os.environ, **pipes.env()},
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
            pipes.close_child_ends()
            os.write(pipes.start_w, b"0")
            _, stderr = await process_handle.communicate()
            if process_handle.returncode != 0:
                raise ExecStartFailed(f"conmon failed: {stderr.decode(errors='replace')}", 126)
            record.sync = await _reader(pipes.take_sync())
            sock = None
            if attach:
                await asyncio.wait_for(asyncio.to_thread(os.read, pipes.attach_r, 4096), 30)
                sock = self._runtime.connect_attach(oci.Bundle(session))
                os.write(pipes.start_w, b"1")
            first = json.loads(await record.sync.readline() or b"{}")
        finally:
            pipes.close()
        pid = int(first.get("data", -1))
        if pid <= 0:
            if sock is not None:
                sock.close()
            message = oci.runc_message(first.get("message", "") or "exec failed")
            raise ExecStartFailed(f"OCI runtime exec failed: {message}: unknown",
                                  start_exit_code(message))
        record.pid = pid
        keep_task(self._watchers, asyncio.create_task(self._await_exit(record)))
        return sock

    async def _await_exit(self, record: Exec) -> None:
        assert record.sync is not None and record.session_dir is not None
        line = await record.sync.readline()
        try:
            code = int(json.loads(line).get("data", -1)) if line else -1
        except ValueError:
            code = -1
        record.exit_code, record.running = code, False
        record.done.set()
        # Off the event loop: the exit frame waiting on `done` goes out meanwhile.
        await asyncio.to_thread(shutil.rmtree, record.session_dir, ignore_errors=True)

    async def wait(self, record: Exec) -> int:
        await record.done.wait()
        return record.exit_code if record.exit_code is not None else -1

    def resize(self, record: Exec, height: int, width: int) -> None:
        if not record.running or record.session_dir is None:
            raise NotFound("no such exec")
        self._runtime.resize(oci.Bundle(record.session_dir), height, width)

    async def kill(self, record: Exec) -> None:
        if record.running and record.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, 9)


class _Pipes:
    """conmon's start, attach and sync pipes (child ends passed by number)."""

    def __init__(self) -> None:
        self.start_r, self.start_w = os.pipe()
        self.attach_r, self.attach_w = os.pipe()
        self.sync_r, self.sync_w = os.pipe()
        self._sync_taken = False

    def child_fds(self) -> tuple[int, int, int]:
        return self.start_r, self.attach_w, self.sync_w

    def env(self) -> dict[str, str]:
        return {"_OCI_STARTPIPE": str(self.start_r), "_OCI_ATTACHPIPE": str(self.attach_w),
                "_OCI_SYNCPIPE": str(self.sync_w)}

    def close_child_ends(self) -> None:
        for fd in self.child_fds():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.start_r = self.attach_w = self.sync_w = -1

    def take_sync(self) -> int:
        self._sync_taken = True
        return self.sync_r

    def close(self) -> None:
        fds = [self.start_r, self.start_w, self.attach_r, self.attach_w, self.sync_w]
        if not self._sync_taken:
            fds.append(self.sync_r)
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(fd, "rb", buffering=0))
    return reader

