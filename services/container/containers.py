"""The container lifecycle: create, start, stop, kill, restart, pause, wait,
rename, remove, restart policies, and re-adoption of running containers when
the service starts (live restore)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
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
    AlreadyExists,
    BerthError,
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from services.common.events import EventBus
from services.container import (
    attach,
    cgroups,
    configs,
    logs,
    mounts,
    names,
    rootfs,
    runtime,
    sandbox,
    spec,
)
from services.container.configs import replace_or_append_env
from services.container.links import Link
from services.container.metrics import START_SECONDS
from services.container.peers import Peers
from services.container.runtime import Bundle, ConmonOptions, CreateFailed, Runtime
from services.container.store import Container, ContainerStore

log = logging.getLogger("berth.container")

_STOP_TIMEOUT = 10
_KILL_WAIT = 30
_BACKOFF_START = 0.1
_BACKOFF_MAX = 60.0
_BACKOFF_RESET_AFTER = 10.0
_ATTACH_SETTLE_SECONDS = 2.0
_LOG_CHECK_SECONDS = 1.0
# Statically linked: they run in any image.
_INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/catatonit")
_DEFAULT_PATH_ENV = f"PATH={spec.DEFAULT_PATH}"


def now_ns() -> int:
    return time.time_ns()


def start_error(message: str) -> tuple[BerthError, int]:
    """Docker's start error for a runc create failure, and the exit code."""
    text = ("failed to create task for container: failed to create shim task: OCI runtime "
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
    def __init__(self, config: Config, events: EventBus, peers: Peers) -> None:
        service_dir = config.service_dir("container")
        self._root = service_dir / "containers"
        self._root.mkdir(exist_ok=True)
        self._store = ContainerStore(service_dir / "state.db")
        self._runtime = Runtime(config.exec_root / "container",
                                config.engine.get("runtime", "runc"))
        self._prefix = config.instance_prefix
        self._runtime_name = config.engine.get("runtime", "runc")
        self._default_init = bool(config.engine.get("init", False))
        self._events = events
        self.peers = peers
        self.containers: dict[str, Container] = {c.id: c for c in self._store.all()}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._exits: dict[str, int] = {}              # id -> number of exits seen
        self._last_exit: dict[str, tuple[int, str]] = {}
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._tasks: dict[str, asyncio.Task] = {}     # exit watchers and restart timers
        self._backoff: dict[str, float] = {}
        self._opening = 0                             # attach calls reading their options

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
        return Bundle(self._root / container.id)

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
        configs.validate_resources(host.resources)
        configs.validate_restart_policy(host)
        configs.validate_runtime(host, self._runtime_name)
        _log_limits(host.log_config)
        self._resolve_links(host, name)
        cid = secrets.token_hex(32)
        lease = await self.peers.acquire_rootfs(config.image, cid)
        directory = self._root / cid
        leased_volumes = False
        try:
            configs.merge_image_config(config, lease.image.config)
            configs.validate(config, host)
            spec.check_security_opt(list(host.security_opt))
            spec.seccomp_profile(host.security_opt, set(spec.capabilities(host)))
            networking = container_pb2.NetworkingConfig()
            networking.CopyFrom(request.networking_config)
            self._apply_defaults(cid, config, host, networking)
            plan = await mounts.plan_mounts(cid, config, host, list(lease.image.config.volumes),
                                            self.peers.volumes, self._mount_points)
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
        return cid, []

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

    async def _linked(self, container: Container) -> tuple[list[str], list[str]]:
        """The /etc/hosts entries and environment the container's links give
        it: each linked container must run, and its address is the one on
        the default bridge."""
        hosts: list[str] = []
        env: list[str] = []
        for text in container.host_config.links:
            link = Link.parse(text)
            target = self.get(link.target)
            if target.state.status != "running":
                raise Conflict(f"Cannot link to a non running container: /{target.name} AS "
                               f"/{container.name}/{link.alias}")
            sandbox = await self.peers.get_sandbox(target.id)
            ips = [e.ip_address for e in (sandbox.endpoints if sandbox else [])
                   if e.network_name == "bridge" and e.ip_address]
            if not ips:
                continue   # not on the default bridge: a link has nothing to name
            hosts.append(link.hosts_entry(target.config.hostname or target.id[:12], ips[0]))
            env += link.environment(container.name, ips[0], list(target.config.exposed_ports),
                                    list(target.config.env))
        return hosts, env

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
        if not any(item.startswith("PATH=") for item in config.env):
            config.env.insert(0, _DEFAULT_PATH_ENV)

    # -- start -----------------------------------------------------------------

    async def start(self, ref: str) -> bool:
        """Start the container; True when it was already running."""
        container = self.get(ref)
        await self._attaches_settled()
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
            await self._prepare(container, bundle, undo)
            pid, conmon_pid = await self._runtime.create(
                container.id, bundle, self._conmon_options(container))
            undo.append(lambda: self._runtime.delete(container.id, force=True))
            for waiter in self._pending.pop(container.id, []):
                if not waiter.done():
                    waiter.set_result(runtime.connect_attach(bundle))
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
        self._watch(container, conmon_pid)
        await self._notify()

    def _start_failed(self, container: Container, message: str, code: int) -> None:
        cgroups.remove_instance_parent(self._prefix)
        for waiter in self._pending.pop(container.id, []):
            if not waiter.done():
                waiter.set_result(None)
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

    async def _prepare(self, container: Container, bundle: Bundle,
                       undo: list[Callable[[], Awaitable[None]]]) -> None:
        """Mount the rootfs, get a network sandbox, write config.json."""
        config, host = container.config, container.host_config
        await rootfs.mount_overlay(container.lower_dirs, bundle.path / "upper",
                                   bundle.path / "work", bundle.rootfs)
        undo.append(lambda: rootfs.unmount(bundle.rootfs))
        await mounts.copy_up(container.mounts, bundle.rootfs)
        user = rootfs.resolve_user(bundle.rootfs, config.user, list(host.group_add))
        namespace_paths, host_namespaces = self._shared_namespaces(host)
        other_netns = ""
        if host.network_mode.startswith("container:"):
            other = self._running_peer(host.network_mode.partition(":")[2])
            other_netns = f"/proc/{other.state.pid}/ns/net"
        request = sandbox.sandbox_request(container.id, container.name, config, host,
                                          container.networking_config, other_netns)
        link_hosts, link_env = await self._linked(container)
        request.extra_hosts.extend(link_hosts)
        files = await sandbox.create(self.peers, request)
        undo.append(lambda: self.peers.destroy_sandbox(container.id))
        etc = {"/etc/hostname": bundle.path / "hostname", "/etc/hosts": bundle.path / "hosts",
               "/etc/resolv.conf": bundle.path / "resolv.conf"}
        etc["/etc/hostname"].write_text((config.hostname or _host_name()) + "\n")
        etc["/etc/hosts"].write_text(files.hosts)
        etc["/etc/resolv.conf"].write_text(files.resolv_conf)
        if host.network_mode.startswith("container:"):
            del etc["/etc/hostname"]
        inputs = spec.SpecInputs(
            container_id=container.id, args=configs.command(config),
            env=_process_env(config, config.hostname or _host_name(), link_env, user.home),
            user=user, rootfs=bundle.rootfs,
            cgroups_path=cgroups.cgroups_path(self._prefix, container.id),
            netns_path=files.netns_path, files=etc, namespace_paths=namespace_paths,
            host_namespaces=host_namespaces, init_binary=_init_binary(host, self._default_init),
            extra_mounts=container.mounts.oci_mounts)
        document = spec.build(config, host, inputs)
        (bundle.path / "config.json").write_text(json.dumps(document))

    def _shared_namespaces(self, host: container_pb2.HostConfig
                           ) -> tuple[dict[str, str], set[str]]:
        paths: dict[str, str] = {}
        on_host: set[str] = set()
        for kind, mode in (("ipc", host.ipc_mode), ("pid", host.pid_mode),
                           ("uts", host.uts_mode)):
            if mode == "host":
                on_host.add(kind)
            elif mode.startswith("container:"):
                other = self._running_peer(mode.partition(":")[2])
                paths[kind] = f"/proc/{other.state.pid}/ns/{kind}"
        if host.network_mode == "host":
            on_host.add("uts")
        return paths, on_host

    def _running_peer(self, ref: str) -> Container:
        other = self.get(ref)
        if other.state.status != "running":
            raise Conflict(f"cannot join network namespace of a non running container: "
                           f"container {other.id} is {other.state.status}")
        return other

    @staticmethod
    def _conmon_options(container: Container) -> ConmonOptions:
        config = container.config
        max_size, max_files = _log_limits(container.host_config.log_config)
        # conmon truncates at its limit (counting across reopens): with several
        # files the service rotates instead, checking every second.
        size_cap = max_size if max_files == 1 else 0
        # Docker closes stdin when the first client detaches only without a TTY.
        return ConmonOptions(tty=config.tty, stdin=config.open_stdin,
                             stdin_once=config.stdin_once and not config.tty,
                             log_size_max=size_cap)

    async def _rotate_logs(self) -> None:
        """One loop for every container whose LogConfig keeps several files."""
        while True:
            await asyncio.sleep(_LOG_CHECK_SECONDS)
            for container in list(self.containers.values()):
                max_size, max_files = _log_limits(container.host_config.log_config)
                if container.state.status not in ("running", "paused") or max_files < 2:
                    continue
                log_file = self.bundle(container).log
                with contextlib.suppress(OSError, Conflict):
                    if max_size and log_file.stat().st_size >= max_size:
                        runtime.rotate_log(self.bundle(container),
                                           functools.partial(logs.rotate, log_file, max_files))

    # -- exits, restart policies -----------------------------------------------

    def _watch(self, container: Container, conmon_pid: int) -> None:
        task = asyncio.create_task(self._watch_conmon(container, conmon_pid))
        self._tasks[container.id] = task

    async def _watch_conmon(self, container: Container, conmon_pid: int) -> None:
        await runtime.wait_process_exit(conmon_pid)
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
        if self._should_restart(container):
            self._schedule_restart(container, ran_for)
        elif container.host_config.auto_remove:
            with contextlib.suppress(BerthError):
                await self.remove(cid, force=True)

    @staticmethod
    def _should_restart(container: Container) -> bool:
        policy = container.host_config.restart_policy
        if container.state.manually_stopped:
            return False
        if policy.name in ("always", "unless-stopped"):
            return True
        if policy.name == "on-failure" and container.state.exit_code != 0:
            limit = policy.maximum_retry_count
            return limit == 0 or container.state.restart_count < limit
        return False

    def _schedule_restart(self, container: Container, ran_for: float) -> None:
        delay = self._backoff.get(container.id, 0)
        delay = _BACKOFF_START if ran_for >= _BACKOFF_RESET_AFTER or not delay else min(
            delay * 2, _BACKOFF_MAX)
        self._backoff[container.id] = delay
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
            for waiter in self._pending.pop(cid, []):
                if not waiter.done():
                    waiter.set_result(None)
            await self._release(container, remove_volumes or container.host_config.auto_remove)
            # Only now: a wait for "removed" returns once the volumes are released.
            del self.containers[cid]
            self._store.delete(cid)
        self._locks.pop(cid, None)
        self._backoff.pop(cid, None)
        self._exits.pop(cid, None)
        self._publish("destroy", container)
        await self._notify()
        self._last_exit.pop(cid, None)

    async def _release(self, container: Container, remove_volumes: bool) -> None:
        cid = container.id
        bundle = self.bundle(container)
        await self._runtime.delete(cid, force=True)
        self._runtime.remove_state(cid)
        await rootfs.unmount(bundle.rootfs)
        with contextlib.suppress(BerthError):
            await self.peers.forget_container(cid)
        with contextlib.suppress(BerthError):
            await self.peers.release_rootfs(cid)
        with contextlib.suppress(BerthError):
            await mounts.release_mounts(cid, self.peers.volumes, remove_volumes)
        await asyncio.to_thread(shutil.rmtree, bundle.path, True)

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

    # -- attach ----------------------------------------------------------------

    async def attach(self, requests: AsyncIterator[container_pb2.AttachRequest]
                     ) -> AsyncIterator[container_pb2.IOFrame]:
        """An attach session: the first request carries the options.

        `docker run` attaches, then starts once the attach is answered; a
        Start that arrives while an attach is still reading its options
        waits for it (see _attaches_settled), so no output is lost.
        """
        self._opening += 1
        try:
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("part") != "options":
                raise InvalidArgument("the first attach message must carry the options")
            options = first.options
            container = self.get(options.id)
            waiter = self._register_attach(container, options)
        finally:
            self._opening -= 1
            await self._notify()
        self._publish("attach", container)
        yield container_pb2.IOFrame(attached=True)
        try:
            if options.logs:
                async for frame in self._replay_logs(container, options):
                    yield frame
            if not options.stream:
                return
            if waiter is None:
                sock = runtime.connect_attach(self.bundle(container))
            else:
                sock = await waiter
            if sock is None:
                return
            async for frame in attach.pump(sock, options, container.config.tty, requests):
                yield frame
        finally:
            if waiter is not None and not waiter.done():
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._pending.get(container.id, []).remove(waiter)

    def _register_attach(self, container: Container, options: container_pb2.AttachOptions
                         ) -> asyncio.Future | None:
        """Check that the container can be attached; a future for the conmon
        socket when it is not running: as in Docker, the session then waits for
        the next start (`docker start -a` attaches first)."""
        status = container.state.status
        attach.parse_detach_keys(options.detach_keys)
        if status == "paused":
            raise Conflict(f"container {options.id} is paused, unpause the container before "
                           "attach")
        if status == "restarting":
            raise Conflict(f"container {options.id} is restarting, wait until the container "
                           "is running")
        if not options.stream or status == "running":
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._pending.setdefault(container.id, []).append(waiter)
        return waiter

    async def _attaches_settled(self) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._opening == 0),
                                       _ATTACH_SETTLE_SECONDS)

    async def _replay_logs(self, container: Container, options: container_pb2.AttachOptions
                           ) -> AsyncIterator[container_pb2.IOFrame]:
        streams = {name for name, wanted in (("stdout", options.stdout),
                                             ("stderr", options.stderr)) if wanted}
        lines, _ = await asyncio.to_thread(logs.read_lines, self.bundle(container).log)
        for line in lines:
            if line.stream in streams:
                stream = (container_pb2.IOFrame.STDERR if line.stream == "stderr"
                          else container_pb2.IOFrame.STDOUT)
                yield container_pb2.IOFrame(stream=stream, data=line.data)

    async def logs(self, request: container_pb2.LogsRequest) -> AsyncIterator[logs.LogLine]:
        container = self.get(request.id)
        if container.host_config.log_config.type == "none":
            raise Unimplemented("configured logging driver does not support reading")
        streams = {name for name, wanted in (("stdout", request.stdout),
                                             ("stderr", request.stderr)) if wanted}
        if request.tail and request.tail != "all" and not request.tail.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid value for \"tail\": \"{request.tail}\"")
        path = self.bundle(container).log
        lines, offset = await asyncio.to_thread(logs.read_lines, path)
        for line in logs.select(lines, streams, request.since_nano,
                                request.until_nano, request.tail):
            yield line
        if not request.follow or not container.running:
            return
        cid = container.id
        async for line in logs.follow(path, offset, streams, request.until_nano,
                                      lambda: cid in self.containers and container.running):
            yield line

    async def resize(self, ref: str, height: int, width: int) -> None:
        container = self.get(ref)
        if container.state.status not in ("running", "paused"):
            raise Conflict(f"Container {container.id} is not running")
        runtime.resize(self.bundle(container), height, width)
        self._publish("resize", container, height=str(height), width=str(width))

    # -- service start and stop ------------------------------------------------

    async def recover(self) -> None:
        """Re-adopt containers whose conmon survived; settle the others."""
        self._tasks["log-rotation"] = asyncio.create_task(self._rotate_logs())
        for container in list(self.containers.values()):
            if container.state.status == "created" and self.bundle(container).rootfs.is_mount():
                # The service died in the middle of a start: undo it.
                self._tasks[container.id] = asyncio.create_task(
                    self._undo_interrupted_start(container))
            if container.state.status not in ("running", "paused", "restarting"):
                continue
            pid = container.state.conmon_pid
            if container.state.status != "restarting" and pid and runtime.conmon_alive(
                    pid, container.id):
                status = await self._runtime.status(container.id)
                container.state.status = "paused" if status == "paused" else "running"
                self._save(container)
                self._watch(container, pid)
                continue
            if container.state.status == "restarting":
                container.state.status = "exited"
                self._save(container)
                if self._should_restart(container):
                    self._schedule_restart(container, _BACKOFF_RESET_AFTER)
                continue
            # In the background: the network service may still be starting.
            self._tasks[container.id] = asyncio.create_task(self._handle_exit(container))

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
        self._store.close()


def _parse_signal(name: str) -> int:
    try:
        return runtime.signal_number(name)
    except ValueError:
        raise InvalidArgument(f"Invalid signal: {name}") from None


def _log_limits(log_config: container_pb2.LogConfig) -> tuple[int, int]:
    """LogConfig max-size in bytes (0: none) and max-file (default 1)."""
    options = log_config.config
    files = options.get("max-file", "1")
    if not files.isdigit() or int(files) < 1:
        raise InvalidArgument(f"invalid value for max-file: {files}")
    return _bytes(options.get("max-size", "")), int(files)


def _bytes(size: str) -> int:
    """Docker's size strings (10m, 1g, 512k, 100) -> bytes; 0 when empty."""
    text = size.strip().lower().removesuffix("b")
    if not text:
        return 0
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        if text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid size: '{size}'") from None


def _init_binary(host: container_pb2.HostConfig, default: bool) -> str | None:
    """The init to run as PID 1: HostConfig.Init, else the engine's `init` setting."""
    if not (host.init if host.HasField("init") else default):
        return None
    for candidate in _INIT_BINARIES:
        if Path(candidate).exists():
            return candidate
    raise Internal("no init binary (tini or catatonit) is installed")


def _process_env(config: container_pb2.ContainerConfig, hostname: str, link_env: list[str],
                 home: str) -> list[str]:
    """What Docker puts in a container's environment: PATH, HOSTNAME, TERM
    with a TTY and the links' variables, each overridden (or, named without
    a value, unset) by the config's image and user variables, and HOME when
    none is set."""
    env = replace_or_append_env(
        [_DEFAULT_PATH_ENV, f"HOSTNAME={hostname}", *(["TERM=xterm"] if config.tty else []),
         *link_env], list(config.env))
    if not any(variable.startswith("HOME=") for variable in env):
        env.append(f"HOME={home}")
    return env


def _host_name() -> str:
    return Path("/proc/sys/kernel/hostname").read_text().strip()


def dir_size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        with contextlib.suppress(OSError):
            if entry.is_file() and not entry.is_symlink():
                total += entry.stat().st_size
    return total
