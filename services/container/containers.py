"""The container lifecycle state machine: create, start, stop, kill, restart,
pause, wait, rename, remove, exits and restarts by policy, and re-adoption of
running containers when the service starts (live restore).

The store, the OCI runtime, the peer services and the bundle builder come
from the caller (server.py wires the real ones; tests/support has fakes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.config import Config
from services.common.errors import (
    RUNTIME_CREATE_FAILED,
    AlreadyExists,
    BerthError,
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
)
from services.common.events import EventBus
from services.container import (
    cgroups,
    configs,
    journalship,
    logdrivers,
    logrotate,
    mounts,
    names,
    reconcile,
    restart,
    rootfs,
    spec,
    syslogship,
)
from services.container.attach import PendingAttaches
from services.container.bundle import BundleBuilder, conmon_options
from services.container.host import recursive_read_only_error
from services.container.links import Link
from services.container.metrics import START_SECONDS
from services.container.peers import Peers
from services.container.runtime import Bundle, CreateFailed, Runtime, signal_number
from services.container.store import Container, ContainerStore

log = logging.getLogger("berth.container")

_STOP_TIMEOUT = 10
_KILL_WAIT = 30
_ATTACH_SETTLE_SECONDS = 2.0
_REOPEN_SECONDS = 5.0   # bound on conmon handling its control fifo (it does so at once)
# What a log driver ships the kept log's lines to besides the file.
LogSink = syslogship.SyslogSink | journalship.JournalSink


def now_ns() -> int:
    return time.time_ns()


def start_error(message: str) -> tuple[BerthError, int]:
    """Docker's start error for a runc create failure, and the exit code."""
    text = (f"{RUNTIME_CREATE_FAILED}failed to create shim task: OCI runtime "
            f"create failed: {message}: unknown")
    lowered = message.lower()
    if "not a directory" in lowered:
        return InvalidArgument(text + ": Are you trying to mount a directory onto a file (or "
                               "vice-versa)? Check if the specified host path exists and is "
                               "the expected type"), 127
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return InvalidArgument(text), 127
    if "permission denied" in lowered:
        return InvalidArgument(text), 126
    return Internal(text), 128


class Manager:
    def __init__(self, config: Config, events: EventBus, store: ContainerStore,
                 runtime: Runtime, peers: Peers, bundles: BundleBuilder) -> None:
        self._root = config.service_dir("container") / "containers"
        self._root.mkdir(exist_ok=True)
        self._store = store
        self._runtime = runtime
        self._bundles = bundles
        self._prefix = config.instance_prefix
        self._runtime_name = config.engine.get("runtime", "runc")
        self._events = events
        self.peers = peers
        self.attaches = PendingAttaches()
        self.containers: dict[str, Container] = {c.id: c for c in self._store.all()}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._exits: dict[str, int] = {}              # id -> number of exits seen
        self._last_exit: dict[str, tuple[int, str]] = {}
        self._tasks: dict[str, asyncio.Task] = {}     # exit watchers and restart timers
        self._backoff = restart.Backoff()
        # Reconcile after a crash (reconcile.py): IDs whose create is in flight
        # count as existing; a peer that missed a release is named to `missed`.
        self.creating: set[str] = set()
        self.missed: Callable[[str], None] = lambda peer: None

    # -- lookups ---------------------------------------------------------------

    def get(self, ref: str) -> Container:
        if ref in self.containers:
            return self.containers[ref]
        name = ref.removeprefix("/")
        for container in self.containers.values():
            if container.name == name:
                return container
        if ref and all(ch in "0123456789abcdef" for ch in ref):
            found = [c for c in self.containers.values() if c.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
        raise NotFound(f"No such container: {ref}")

    @property
    def runtime(self) -> Runtime:
        """The OCI runtime the containers run under (exec and update use it too)."""
        return self._runtime

    def save_host_config(self, container: Container) -> None:
        """Persist the container's host config after a change (docker update)."""
        self._store.save_host_config(container)

    def bundle(self, container: Container) -> Bundle:
        return Bundle(self._root / container.id,
                      logdrivers.log_file(container.host_config.log_config))

    async def reopen_log(self, ref: str) -> None:
        """conmon starts the log file anew (its owner has moved the old one);
        done once the new file exists, as the CRI's caller expects."""
        container = self.get(ref)
        if container.state.status not in ("running", "paused"):
            raise Conflict(f"container {container.id} is not running")
        bundle = self.bundle(container)
        self._runtime.rotate_log(bundle, lambda: None)
        deadline = time.monotonic() + _REOPEN_SECONDS
        while not bundle.log.exists():
            if time.monotonic() > deadline:
                raise Internal(f"conmon did not reopen the log of {container.id}")
            await asyncio.sleep(0.01)

    def lock(self, cid: str) -> asyncio.Lock:
        """The lock that serializes changes to one container's state and mounts."""
        return self._locks.setdefault(cid, asyncio.Lock())

    def attributes(self, container: Container, **extra: str) -> dict[str, str]:
        return {**container.config.labels, "image": container.image,
                "name": container.name, **extra}

    def _publish(self, action: str, container: Container, **extra: str) -> None:
        self._events.publish(action, container.id, self.attributes(container, **extra))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _save(self, container: Container) -> None:
        self._store.save_state(container)

    def counts(self) -> dict[str, int]:
        states = [c.state.status for c in self.containers.values()]
        running = sum(s in ("running", "restarting") for s in states)
        paused = states.count("paused")
        return {"containers": len(states), "running": running, "paused": paused,
                "stopped": len(states) - running - paused}

    # -- create ----------------------------------------------------------------

    async def create(self, request: container_pb2.CreateContainerRequest
                     ) -> tuple[str, list[str]]:
        config = container_pb2.ContainerConfig()
        config.CopyFrom(request.config)
        host = container_pb2.HostConfig()
        host.CopyFrom(request.host_config)
        name = names.validate(request.name) if request.name else self._free_name()
        if any(c.name == name for c in self.containers.values()):
            raise AlreadyExists(self._store.name_in_use(name))
        if not config.image:
            raise InvalidArgument("No image specified")
        warnings = configs.discard_unsupported_blkio(host.resources)
        configs.validate_resources(host.resources)
        configs.validate_restart_policy(host)
        configs.validate_runtime(host, self._runtime_name)
        logdrivers.validate(host.log_config)
        self._resolve_links(host, name)
        cid = secrets.token_hex(32)
        self.creating.add(cid)
        try:
            recursion = mounts.ReadOnlyRecursion(
                binds_non_recursive=request.read_only_binds_non_recursive,
                unsupported=await asyncio.to_thread(recursive_read_only_error,
                                                    self.runtime.binary))
            await self._create_as(cid, name, config, host, request.networking_config,
                                  recursion)
        finally:
            self.creating.discard(cid)
        return cid, warnings

    async def _create_as(self, cid: str, name: str, config: container_pb2.ContainerConfig,
                         host: container_pb2.HostConfig,
                         requested_networking: container_pb2.NetworkingConfig,
                         recursion: mounts.ReadOnlyRecursion) -> None:
        lease = await self.peers.acquire_rootfs(config.image, cid)
        directory = self._root / cid
        leased_volumes = False
        try:
            configs.merge_image_config(config, lease.image.config)
            configs.validate(config, host)
            spec.check_security_opt(list(host.security_opt))
            spec.seccomp_profile(host.security_opt, set(spec.capabilities(host)))
            networking = container_pb2.NetworkingConfig()
            networking.CopyFrom(requested_networking)
            self._apply_defaults(cid, config, host, networking)
            plan = await mounts.plan_mounts(cid, config, host, list(lease.image.config.volumes),
                                            self.peers.volumes, self._mount_points, recursion)
            leased_volumes = True
            for sub in ("upper", "work", "rootfs"):
                (directory / sub).mkdir(parents=True)
            container = Container(
                id=cid, name=name, created_ns=now_ns(), image=config.image,
                image_id=lease.image_id, lower_dirs=list(lease.lower_dirs), config=config,
                host_config=host, networking_config=networking, mounts=plan)
            self._store.insert(container)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            if leased_volumes:
                with contextlib.suppress(BerthError):
                    await mounts.release_mounts(cid, self.peers.volumes, remove_anonymous=True)
            with contextlib.suppress(BerthError):
                await self.peers.release_rootfs(cid)
            raise
        self.containers[cid] = container
        self._publish("create", container)

    def _resolve_links(self, host: container_pb2.HostConfig, name: str) -> None:
        """Check that linked containers exist; store the links as Docker shows them."""
        resolved = []
        for text in host.links:
            link = Link.parse(text)
            try:
                target = self.get(link.target)
            except NotFound as exc:
                raise InvalidArgument(
                    f"could not get container for {link.target}: {exc.message}") from exc
            resolved.append(Link(target.name, link.alias).stored(name))
        del host.links[:]
        host.links.extend(resolved)

    async def _mount_points(self, ref: str) -> list[container_pb2.MountPoint]:
        return self.get(ref).mounts.mount_points()

    def _free_name(self) -> str:
        taken = {c.name for c in self.containers.values()}
        for attempt in range(100):
            name = names.generate(attempt)
            if name not in taken:
                return name
        return secrets.token_hex(6)

    @staticmethod
    def _apply_defaults(cid: str, config: container_pb2.ContainerConfig,
                        host: container_pb2.HostConfig,
                        networking: container_pb2.NetworkingConfig) -> None:
        if host.network_mode in ("", "default"):
            host.network_mode = "bridge" if not config.network_disabled else "none"
        if "default" in networking.endpoints_config:
            # Docker's name for the daemon's default network, bridge here.
            endpoint = networking.endpoints_config.pop("default")
            networking.endpoints_config[host.network_mode].CopyFrom(endpoint)
        if not config.hostname and host.network_mode != "host":
            config.hostname = cid[:12]
        if not host.log_config.type:
            host.log_config.type = "json-file"
        if not host.restart_policy.name:
            host.restart_policy.name = "no"

    # -- start -----------------------------------------------------------------

    async def start(self, ref: str) -> bool:
        """Start the container; True when it was already running."""
        container = self.get(ref)
        await self.attaches.settled(_ATTACH_SETTLE_SECONDS)
        async with self.lock(container.id):
            if container.state.status == "paused":
                raise Conflict("cannot start a paused container, try unpause instead")
            if container.running and container.state.status != "restarting":
                return True
            began = time.perf_counter()
            try:
                await self._start(container)
            except BerthError:
                if container.host_config.auto_remove:
                    self._tasks[container.id] = asyncio.create_task(
                        self.remove(container.id, force=True, remove_volumes=True))
                raise
            START_SECONDS.observe(time.perf_counter() - began)
        return False

    async def _start(self, container: Container) -> None:
        bundle = self.bundle(container)
        undo: list[Callable[[], Awaitable[None]]] = []
        try:
            log_offset = bundle.log.stat().st_size if bundle.log.exists() else 0
            sink = await self._log_sink(container)
            if sink is not None:
                undo.append(sink.close)
            await self._bundles.prepare(container, bundle, undo, self.get)
            pid, conmon_pid = await self._runtime.create(
                container.id, bundle, conmon_options(container))
            undo.append(lambda: self._runtime.delete(container.id, force=True))
            self.attaches.started(container.id,
                                  lambda: self._runtime.connect_attach(bundle))
            await self._runtime.start(container.id)
        except CreateFailed as exc:
            await self._undo(undo)
            error, code = start_error(str(exc))
            self._start_failed(container, error.message, code)
            raise error from exc
        except BerthError as exc:
            await self._undo(undo)
            self._start_failed(container, exc.message, 128)
            raise
        except asyncio.CancelledError:
            await self._undo(undo)
            self._start_failed(container, "start was cancelled", 128)
            raise
        except Exception as exc:
            # A bug or an OS error: the caller still gets an answer (500) and
            # the container's AutoRemove still happens.
            await self._undo(undo)
            log.exception("start of %s failed", container.id[:12])
            self._start_failed(container, str(exc), 128)
            raise Internal(f"failed to start container {container.id}: {exc}") from exc
        state = container.state
        state.status, state.pid, state.conmon_pid = "running", pid, conmon_pid
        state.exit_code, state.error, state.oom_killed = 0, "", False
        state.started_ns, state.has_been_started, state.manually_stopped = now_ns(), True, False
        self._save(container)
        self._publish("start", container)
        self._watch(container, conmon_pid, sink, log_offset)
        await self._notify()

    def _start_failed(self, container: Container, message: str, code: int) -> None:
        cgroups.remove_instance_parent(self._prefix)
        self.attaches.ended(container.id)
        state = container.state
        state.exit_code, state.error = code, message
        if state.status == "restarting":
            state.status = "exited"
            state.finished_ns = now_ns()
        self._save(container)

    @staticmethod
    async def _undo(steps: list[Callable[[], Awaitable[None]]]) -> None:
        for step in reversed(steps):
            try:
                await step()
            except BerthError as exc:
                log.warning("cleanup after failed start: %s", exc.message)

    # -- exits, restart policies -----------------------------------------------

    @staticmethod
    async def _log_sink(container: Container) -> LogSink | None:
        """Where the log driver sends the lines besides the kept log: the
        syslog connection or the journal's socket, opened before the start
        as Docker opens them."""
        log_config = container.host_config.log_config
        if log_config.type == "journald":
            return await journalship.JournalSink.connect(journalship.fields_of(
                log_config, container.config, container.id, container.name,
                container.image_id))
        if log_config.type != "syslog":
            return None
        options = dict(log_config.config)
        tag = logdrivers.shipped_tag(options, container.config, container.id, container.name,
                                     container.image_id)
        return await syslogship.SyslogSink.connect(options, tag)

    def _watch(self, container: Container, conmon_pid: int,
               sink: LogSink | None = None, log_offset: int = 0) -> None:
        task = asyncio.create_task(self._watch_conmon(container, conmon_pid, sink, log_offset))
        self._tasks[container.id] = task

    async def _watch_conmon(self, container: Container, conmon_pid: int,
                            sink: LogSink | None, log_offset: int) -> None:
        exited = asyncio.Event()
        shipping = None if sink is None else asyncio.create_task(
            sink.ship(self.bundle(container).log, log_offset, lambda: not exited.is_set()))
        try:
            await self._runtime.wait_exit(conmon_pid)
            exited.set()
            if shipping is not None:
                await shipping
        finally:
            if shipping is not None:
                shipping.cancel()
        await self._handle_exit(container)

    async def _handle_exit(self, container: Container) -> None:
        cid = container.id
        code = self._runtime.exit_code(cid)
        oom = self._runtime.oom_killed(cid)
        await self._runtime.delete(cid, force=True)
        cgroups.remove_instance_parent(self._prefix)
        with contextlib.suppress(BerthError):
            await rootfs.unmount(self.bundle(container).rootfs)
        with contextlib.suppress(BerthError):
            await self.peers.destroy_sandbox(cid)
        state = container.state
        ran_for = (now_ns() - state.started_ns) / 1e9
        state.status, state.pid, state.conmon_pid = "exited", 0, 0
        state.exit_code = 255 if code is None else code
        state.oom_killed, state.finished_ns = oom, now_ns()
        self._tasks.pop(cid, None)
        if cid not in self.containers:
            return
        self._save(container)
        self._exits[cid] = self._exits.get(cid, 0) + 1
        self._last_exit[cid] = (state.exit_code, state.error)
        if oom:
            self._publish("oom", container)
        self._publish("die", container, exitCode=str(state.exit_code))
        await self._notify()
        if restart.should_restart(container):
            self._schedule_restart(container, ran_for)
        elif container.host_config.auto_remove:
            with contextlib.suppress(BerthError):
                await self.remove(cid, force=True)

    def _schedule_restart(self, container: Container, ran_for: float) -> None:
        delay = self._backoff.next_delay(container.id, ran_for)
        container.state.status = "restarting"
        self._save(container)
        self._tasks[container.id] = asyncio.create_task(self._restart_later(container, delay))

    async def _restart_later(self, container: Container, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self.lock(container.id):
            if container.state.status != "restarting" or container.id not in self.containers:
                return
            container.state.restart_count += 1
            try:
                await self._start(container)
            except BerthError as exc:
                log.warning("restart of %s failed: %s", container.id[:12], exc.message)
                await self._notify()

    # -- stop, kill, restart, pause --------------------------------------------

    async def stop(self, ref: str, signal_name: str = "", timeout: int | None = None) -> bool:
        """Stop the container; True when it was not running."""
        container = self.get(ref)
        if container.state.status == "restarting":
            self._cancel_restart(container)
            return False
        if not container.running:
            return True
        container.state.manually_stopped = True
        self._save(container)
        await self._stop(container, signal_name, timeout)
        self._publish("stop", container)
        return False

    async def _stop(self, container: Container, signal_name: str, timeout: int | None) -> None:
        signum = _parse_signal(signal_name or container.config.stop_signal or "SIGTERM")
        if timeout is None:
            has_own = container.config.HasField("stop_timeout")
            timeout = container.config.stop_timeout if has_own else _STOP_TIMEOUT
        if container.state.status == "paused":
            await self._signal(container, signal.SIGKILL)
            # A frozen process dies once thawed; runc may have thawed it already.
            with contextlib.suppress(Internal, Conflict):
                await self._runtime.resume(container.id)
        elif timeout != 0:
            await self._signal(container, signum)
            if await self._wait_stopped(container, timeout if timeout > 0 else None):
                return
        await self._signal(container, signal.SIGKILL)
        if not await self._wait_stopped(container, _KILL_WAIT):
            raise Internal(f"container {container.id} did not stop after SIGKILL")

    async def _signal(self, container: Container, signum: int) -> None:
        with contextlib.suppress(Conflict):
            await self._runtime.kill(container.id, signum)
        self._publish("kill", container, signal=str(signum))

    async def _wait_stopped(self, container: Container, timeout: float | None) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: container.state.status not in ("running", "paused")), timeout)
            except TimeoutError:
                return False
        return True

    def _cancel_restart(self, container: Container) -> None:
        task = self._tasks.pop(container.id, None)
        if task:
            task.cancel()
        container.state.status = "exited"
        container.state.manually_stopped = True
        self._save(container)

    async def kill(self, ref: str, signal_name: str = "") -> None:
        container = self.get(ref)
        signum = _parse_signal(signal_name or "KILL")
        if container.state.status == "paused":
            raise Conflict(f"Cannot kill container: {container.id}: Container {container.id} "
                           "is paused. Unpause the container before stopping or killing")
        if container.state.status == "restarting":
            self._cancel_restart(container)
            return
        if not container.running:
            raise Conflict(f"Cannot kill container: {container.id}: Container {container.id} "
                           "is not running")
        container.state.manually_stopped = True
        self._save(container)
        await self._signal(container, signum)
        if signum == signal.SIGKILL:
            # Docker answers a SIGKILL once the container is gone.
            await self._wait_stopped(container, _KILL_WAIT)

    async def restart(self, ref: str, signal_name: str = "", timeout: int | None = None
                      ) -> None:
        container = self.get(ref)
        if container.state.status == "restarting":
            self._cancel_restart(container)
        if container.running:
            await self._stop(container, signal_name, timeout)
            self._publish("stop", container)
        await self.start(container.id)
        self._publish("restart", container)

    async def pause(self, ref: str) -> None:
        container = self.get(ref)
        if container.state.status == "paused":
            raise Conflict(f"Container {container.id} is already paused")
        if container.state.status != "running":
            raise Conflict(f"Container {container.id} is not running")
        await self._runtime.pause(container.id)
        container.state.status = "paused"
        self._save(container)
        self._publish("pause", container)

    async def unpause(self, ref: str) -> None:
        container = self.get(ref)
        if container.state.status != "paused":
            raise Conflict(f"Container {container.id} is not paused")
        await self._runtime.resume(container.id)
        container.state.status = "running"
        self._save(container)
        self._publish("unpause", container)

    # -- wait ------------------------------------------------------------------

    async def wait(self, ref: str, condition: str) -> AsyncIterator[tuple[int, str] | None]:
        """Yields None once registered, then (exit code, error)."""
        container = self.get(ref)
        cid = container.id
        if condition not in ("", "not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        exits_before = self._exits.get(cid, 0)
        yield None

        def met() -> bool:
            if cid not in self.containers:
                return True
            if condition == "removed":
                return False
            if condition == "next-exit":
                return self._exits.get(cid, 0) > exits_before
            return container.state.status not in ("running", "paused", "restarting")

        async with self._changed:
            await self._changed.wait_for(met)
        code, error = self._last_exit.get(cid, (container.state.exit_code,
                                                container.state.error))
        if cid in self.containers:
            code, error = container.state.exit_code, container.state.error
        # Docker reports no error when waiting for removal.
        yield code, "" if condition == "removed" else error

    # -- rename, remove, prune -------------------------------------------------

    async def rename(self, ref: str, new_name: str) -> None:
        container = self.get(ref)
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        name = names.validate(new_name)
        if name == container.name:
            raise InvalidArgument("Renaming a container with the same name as its current "
                                  "name")
        old = container.name
        await self.peers.rename_container(container.id, name)
        try:
            self._store.rename(container, name)
        except BerthError:
            await self.peers.rename_container(container.id, old)
            raise
        self._publish("rename", container, oldName="/" + old)

    async def remove(self, ref: str, force: bool = False, remove_volumes: bool = False
                     ) -> None:
        container = self.get(ref)
        cid = container.id
        async with self.lock(cid):
            if container.state.status == "restarting":
                self._cancel_restart(container)
            if container.running:
                if not force:
                    raise Conflict(f"You cannot remove a running container {cid}. Stop the "
                                   "container before attempting removal or force remove")
                container.state.manually_stopped = True
                await self._stop(container, "KILL", 0)
            if cid not in self.containers:
                return
            self.attaches.ended(cid)
            missed = await self._release(container,
                                         remove_volumes or container.host_config.auto_remove)
            # Only now: a wait for "removed" returns once the volumes are released.
            del self.containers[cid]
            self._store.delete(cid)
        for peer in missed:
            self.missed(peer)
        self._locks.pop(cid, None)
        self._backoff.forget(cid)
        self._exits.pop(cid, None)
        self._publish("destroy", container)
        await self._notify()
        self._last_exit.pop(cid, None)

    async def _release(self, container: Container, remove_volumes: bool) -> list[str]:
        """Undo the container's state here and at the peers; the peers that
        missed their release (the reconcile catches up with them)."""
        cid = container.id
        bundle = self.bundle(container)
        await self._runtime.delete(cid, force=True)
        self._runtime.remove_state(cid)
        await rootfs.unmount(bundle.rootfs)
        releases: dict[str, Callable[[], Awaitable[None]]] = {
            "network": lambda: self.peers.forget_container(cid),
            "image": lambda: self.peers.release_rootfs(cid),
            "volume": lambda: mounts.release_mounts(cid, self.peers.volumes, remove_volumes)}
        missed = []
        for peer, release in releases.items():
            try:
                await release()
            except BerthError as exc:
                log.warning("release of %s at the %s service failed: %s", cid[:12], peer,
                            exc.message)
                missed.append(peer)
        await asyncio.to_thread(shutil.rmtree, bundle.path, True)
        return missed

    async def prune(self, keep: Callable[[Container], bool]) -> tuple[list[str], int]:
        deleted, reclaimed = [], 0
        for container in list(self.containers.values()):
            if container.running or keep(container):
                continue
            reclaimed += await asyncio.to_thread(dir_size, self.bundle(container).path / "upper")
            with contextlib.suppress(NotFound, Conflict):
                await self.remove(container.id)
                deleted.append(container.id)
        return deleted, reclaimed

    # -- service start and stop ------------------------------------------------

    async def recover(self) -> None:
        """Re-adopt containers whose conmon survived; settle the others."""
        self._tasks["log-rotation"] = asyncio.create_task(logrotate.rotate_forever(
            self.containers.values, self.bundle, self._runtime))
        reconcile.remove_stray_bundles(self._root, set(self.containers))
        for container in list(self.containers.values()):
            if reconcile.removed_on_restore(container):
                continue
            if container.state.status == "created" and self.bundle(container).rootfs.is_mount():
                # The service died in the middle of a start: undo it.
                self._tasks[container.id] = asyncio.create_task(
                    self._undo_interrupted_start(container))
            if container.state.status not in ("running", "paused", "restarting"):
                continue
            pid = container.state.conmon_pid
            if container.state.status != "restarting" and pid and self._runtime.conmon_alive(
                    pid, container.id):
                status = await self._runtime.status(container.id)
                container.state.status = "paused" if status == "paused" else "running"
                self._save(container)
                await self._rewatch(container, pid)
                continue
            if container.state.status == "restarting":
                container.state.status = "exited"
                self._save(container)
                if restart.should_restart(container):
                    self._schedule_restart(container, restart.BACKOFF_RESET_AFTER)
                continue
            # In the background: the network service may still be starting.
            self._tasks[container.id] = asyncio.create_task(self._handle_exit(container))

    async def _rewatch(self, container: Container, conmon_pid: int) -> None:
        """Watch a re-adopted container; its syslog lines resume from the log's end."""
        log_path = self.bundle(container).log
        sink = None
        try:
            sink = await self._log_sink(container)
        except BerthError as exc:
            log.warning("logs of %s are not shipped: %s", container.id[:12], exc.message)
        offset = log_path.stat().st_size if log_path.exists() else 0
        self._watch(container, conmon_pid, sink, offset)

    async def _undo_interrupted_start(self, container: Container) -> None:
        await self._runtime.delete(container.id, force=True)
        with contextlib.suppress(BerthError):
            await rootfs.unmount(self.bundle(container).rootfs)
        with contextlib.suppress(BerthError):
            await self.peers.destroy_sandbox(container.id)
        self._tasks.pop(container.id, None)

    async def close(self) -> None:
        """Stop watching; the containers and their conmons keep running."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _parse_signal(name: str) -> int:
    try:
        return signal_number(name)
    except ValueError:
        raise InvalidArgument(f"Invalid signal: {name}") from None


def dir_size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        with contextlib.suppress(OSError):
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
    return total
