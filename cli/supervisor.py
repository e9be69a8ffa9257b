"""`berth up`: start every service and the gateway, keep them alive, stop them.

Each service is a child process (`berth serve NAME`) in its own session, so a
terminal's ctrl-c reaches only the supervisor, which then stops the children
in order. Containers are not children of any of them (conmon daemonizes), so
they keep running across a stop (live restore).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import SERVICES, Config

log = logging.getLogger("berth.up")

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
HEALTHY_RESET = 30.0  # a child that ran this long restarts with the first backoff


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = BACKOFF_FIRST


class ExecRootLock:
    """One engine per exec root: an flock on E/berth.lock holding our PID."""

    def __init__(self, exec_root: Path) -> None:
        exec_root.mkdir(parents=True, exist_ok=True)
        self.path = exec_root / "berth.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.path.read_text().strip() or "unknown"
            raise SystemExit(
                f"berth up: an engine is already running on exec root "
                f"{self.path.parent} (pid {holder}); stop it first or use another "
                f"--exec-root") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)


def child_argv(name: str, config: Config, port: int, passthrough: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "cli.main", "serve", name,
            "--data-root", str(config.data_root), "--exec-root", str(config.exec_root),
            "--metrics-addr", f"127.0.0.1:{port}", *passthrough]
    if name == "gateway" and config.gateway_tcp:
        tls = config.gateway_tls
        argv += ["--tcp", config.gateway_tcp]
        if tls is not None:
            argv += ["--tlscacert", tls.ca, "--tlscert", tls.cert, "--tlskey", tls.key]
    return argv


def metrics_port(base: int, name: str) -> int:
    """Gateway on `base`, then the services in SERVICES order; 0: free ports."""
    if not base:
        return 0
    order = ["gateway", *(s for s in SERVICES if s != "gateway")]
    return base + order.index(name)


def is_serving(config: Config, name: str) -> bool:
    address = config.address(name)
    if not address.startswith("unix://"):
        return True  # remote peers are watched by their own host
    try:
        with grpc.insecure_channel(address) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


class Supervisor:
    def __init__(self, config: Config, metrics_base: int, passthrough: list[str]) -> None:
        self.config = config
        self.children = [
            Child(name, child_argv(name, config, metrics_port(metrics_base, name),
                                   passthrough))
            for name in SERVICES]
        self.stopping = asyncio.Event()

    async def spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv, stdin=asyncio.subprocess.DEVNULL, stdout=sys.stderr.fileno(),
            start_new_session=True)
        child.started = time.monotonic()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {child.name for child in self.children}
        while pending:
            for child in self.children:
                if child.process and child.process.returncode is not None:
                    raise SystemExit(f"berth up: the {child.name} service exited with "
                                     f"code {child.process.returncode} while starting")
            pending = {name for name in pending
                       if not await asyncio.to_thread(is_serving, self.config, name)}
            if pending and time.monotonic() > deadline:
                raise SystemExit(f"berth up: not serving after {READY_TIMEOUT:.0f}s: "
                                 + ", ".join(sorted(pending)))
            if pending:
                await asyncio.sleep(0.05)

    async def watch(self, child: Child) -> None:
        """Restart `child` whenever it dies, with a growing back-off."""
        while not self.stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - child.started > HEALTHY_RESET:
                child.backoff = BACKOFF_FIRST
            log.warning("%s service exited with code %s; restarting in %.1fs",
                        child.name, code, child.backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), child.backoff)
                return
            child.backoff = min(child.backoff * 2, BACKOFF_MAX)
            await self.spawn(child)

    async def stop_all(self) -> None:
        # The gateway first so clients stop arriving, then the rest in reverse.
        for child in reversed(self.children):
            if child.process and child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.process is None:
                continue
            try:
                await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("%s service did not stop in %.0fs; killing it",
                            child.name, STOP_TIMEOUT)
                child.process.kill()
                await child.process.wait()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            for child in self.children:
                await self.spawn(child)
            ready = asyncio.create_task(self.wait_ready())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                ready.result()
                print(f"berth ready: unix://{self.config.docker_socket}", flush=True)
                watchers = [asyncio.create_task(self.watch(c)) for c in self.children]
                await self.stopping.wait()
                for watcher in watchers:
                    watcher.cancel()
            else:
                ready.cancel()
            stop.cancel()
        finally:
            await self.stop_all()
        return 0


def up(config: Config, metrics_base: int, passthrough: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s up %(levelname)s %(message)s")
    lock = ExecRootLock(config.exec_root)
    lock.acquire()
    try:
        return asyncio.run(Supervisor(config, metrics_base, passthrough).run())
    finally:
        lock.release()
