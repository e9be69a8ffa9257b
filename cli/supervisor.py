"""`berth up`: start every service and the gateway, keep them alive, stop them.

Each service is a child process (`berth serve NAME`) in its own session, so a
terminal's ctrl-c reaches only the supervisor, which then stops the children
in order; SIGHUP to the supervisor has every service read the config file
again. A child gets SIGTERM when the supervisor dies, even by SIGKILL, so
there is never a second set of services: the next `berth up` waits for the
previous set to finish stopping. Containers are not children of any of them
(conmon daemonizes), so they keep running across a stop (live restore).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.types.v1 import types_pb2, types_pb2_grpc
from services.common import peers
from services.common.config import SERVICES, Config
from services.common.pidlock import PidLock
from services.common.server import prepare_exec_root, service_lock
from services.common.tasks import keep_task

log = logging.getLogger("berth.up")

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
PREVIOUS_EXIT_TIMEOUT = 30.0  # a previous set's graceful stop, with room to spare
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
HEALTHY_RESET = 30.0  # a child that ran this long restarts with the first backoff
RELOAD_TIMEOUT = 30.0


class StartFailed(Exception):
    """The engine cannot start; raised in tasks, where SystemExit would
    escape the event loop before the started children are stopped."""


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
        prepare_exec_root(exec_root)
        self._lock = PidLock(exec_root / "berth.lock")

    def acquire(self) -> None:
        if not self._lock.acquire():
            holder, _ = self._lock.holder()
            raise SystemExit(
                f"berth up: an engine is already running on exec root "
                f"{self._lock.path.parent} (pid {holder}); stop it first or use another "
                f"--exec-root")

    def release(self) -> None:
        self._lock.release()


def child_argv(name: str, config: Config, port: int, passthrough: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "cli.main", "serve", name,
            "--data-root", str(config.data_root), "--exec-root", str(config.exec_root),
            "--metrics-addr", f"127.0.0.1:{port}", "--supervisor-pid", str(os.getpid()),
            *passthrough]
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


async def reload_service(config: Config, name: str) -> None:
    """Have the service `name` read the engine config file again."""
    async with peers.channel(config, name) as channel:
        await types_pb2_grpc.EngineConfigStub(channel).Reload(
            types_pb2.ReloadEngineConfigRequest(), timeout=RELOAD_TIMEOUT)


class Supervisor:
    def __init__(self, config: Config, metrics_base: int, passthrough: list[str]) -> None:
        self.config = config
        self.children = [
            Child(name, child_argv(name, config, metrics_port(metrics_base, name),
                                   passthrough))
            for name in SERVICES]
        self.stopping = asyncio.Event()
        self.reloading = asyncio.Lock()
        self.reloads: set[asyncio.Task] = set()

    async def previous_set_gone(self) -> None:
        """A previous supervisor killed alone leaves its services stopping
        (they got SIGTERM when it died): start ours once their locks are free."""
        deadline = time.monotonic() + PREVIOUS_EXIT_TIMEOUT
        locks = {name: service_lock(self.config.exec_root, name) for name in SERVICES}
        announced: set[str] = set()
        while held := [name for name, lock in locks.items() if lock.is_held()]:
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"berth up: still running on exec root {self.config.exec_root} after "
                    f"{PREVIOUS_EXIT_TIMEOUT:.0f}s: " + ", ".join(
                        f"{name} service (pid {locks[name].holder()[0]})" for name in held)
                    + "; stop them first")
            for name in set(held) - announced:
                log.info("waiting for the %s service already on this exec root (pid %s) "
                         "to exit", name, locks[name].holder()[0])
            announced.update(held)
            await asyncio.sleep(0.1)

    async def spawn(self, child: Child) -> None:
        # Forked from the event loop's thread, the main one: the child's
        # PR_SET_PDEATHSIG fires when the thread that forked it ends, so a
        # worker thread here would stop the child when that thread ends.
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
                    raise StartFailed(f"berth up: the {child.name} service exited with "
                                     f"code {child.process.returncode} while starting")
            pending = {name for name in pending
                       if not await asyncio.to_thread(is_serving, self.config, name)}
            if pending and time.monotonic() > deadline:
                raise StartFailed(f"berth up: not serving after {READY_TIMEOUT:.0f}s: "
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

    def on_sighup(self) -> None:
        keep_task(self.reloads, asyncio.create_task(self.reload()))

    async def reload(self) -> None:
        """SIGHUP: every running service reads the config file again. The
        container service goes last: it announces the reload (Docker's
        `daemon reload` event), once the others have applied it. The first
        service that finds the file invalid stops the reload, so none
        changes."""
        log.info("got signal to reload configuration, reloading from: %s",
                 self.config.engine_file or "no file")
        container_last = sorted(self.children, key=lambda child: child.name == "container")
        async with self.reloading:
            for child in container_last:
                if child.process is None or child.process.returncode is not None:
                    continue
                try:
                    await reload_service(self.config, child.name)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        log.error("%s; keeping the previous configuration", exc.details())
                        return
                    log.warning("the %s service did not reload its configuration: %s",
                                child.name, exc.details())

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

    async def unless_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` unless SIGINT/SIGTERM comes first; True if it completed."""
        task = asyncio.create_task(work)
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not task.done():
            task.cancel()
            return False
        task.result()
        return True

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.on_sighup)
        try:
            if not await self.unless_stopped(self.previous_set_gone()):
                return 0
            for child in self.children:
                await self.spawn(child)
            if not await self.unless_stopped(self.wait_ready()):
                return 0
            print(f"berth ready: unix://{self.config.docker_socket}", flush=True)
            watchers = [asyncio.create_task(self.watch(c)) for c in self.children]
            await self.stopping.wait()
            for watcher in watchers:
                watcher.cancel()
        finally:
            await self.stop_all()
        return 0


def up(config: Config, metrics_base: int, passthrough: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s up %(levelname)s %(message)s")
    lock = ExecRootLock(config.exec_root)
    lock.acquire()
    try:
        return asyncio.run(Supervisor(config, metrics_base, passthrough).run())
    except StartFailed as exc:
        raise SystemExit(str(exc)) from None
    finally:
        lock.release()
