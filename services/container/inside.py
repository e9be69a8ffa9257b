"""The domain of working inside containers: exec, archive (docker cp), top,
stats, changes, export, commit, update and healthchecks, on top of the
lifecycle Manager (container lookup, bundle, runtime, events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.common.config import Config
from services.common.errors import (
    BerthError,
    Conflict,
    Internal,
    InvalidArgument,
    PermissionDenied,
)
from services.common.events import EventBus
from services.container import archive, attach, changes, health, rootfs, stats, top, update
from services.container.cgroups import cgroups_path
from services.container.chroot_thread import tar_chrooted, untar_chrooted
from services.container.commit_changes import apply_changes
from services.container.containers import Manager
from services.container.exec import Exec, ExecManager, ExecStartFailed, keep_task, process_spec
from services.container.store import Container

Frame = container_pb2.IOFrame
STATS_INTERVAL = 1.0
# Sends a layer (options, then tar chunks) to the image service; returns the image ID.
CommitLayer = Callable[[AsyncIterator[image_pb2.CommitLayerRequest]], Awaitable[str]]


class Inside:
    def __init__(self, config: Config, manager: Manager, events: EventBus) -> None:
        self.config = config
        self._manager = manager
        self._events = events
        self._runtime = manager.runtime
        self.execs = ExecManager(config.exec_root / "container", self._runtime)
        self._health = health.HealthTasks()
        self._watcher: asyncio.Task | None = None
        self._mount_users: dict[str, int] = {}
        self._reporters: set[asyncio.Task] = set()

    # -- service lifetime --------------------------------------------------

    async def start(self) -> None:
        """Follow container starts and exits to run healthchecks."""
        await asyncio.to_thread(self.execs.sweep)
        for container in list(self._manager.containers.values()):
            if container.state.status in ("running", "paused"):
                self._start_health(container)
        self._watcher = asyncio.create_task(self._follow_events())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._health.close()

    async def _follow_events(self) -> None:
        async for event in self._events.subscribe(types_pb2.SubscribeRequest()):
            if event.type != "container":
                continue
            if event.action == "start":
                with contextlib.suppress(BerthError):
                    self._start_health(self._manager.get(event.actor_id))
            elif event.action in ("die", "destroy"):
                self._health.stop(event.actor_id)
                if event.action == "die":
                    with contextlib.suppress(BerthError):
                        health.mark_stopped(self._manager.get(event.actor_id).state.health)
                if event.action == "destroy":
                    self.execs.forget_container(event.actor_id)

    def _publish(self, action: str, container: Container, **extra: str) -> None:
        self._events.publish(action, container.id, self._manager.attributes(container, **extra))

    def _running(self, ref: str) -> Container:
        container = self._manager.get(ref)
        if container.state.status not in ("running", "paused") or not container.state.pid:
            raise Conflict(f"Container {container.id} is not running")
        return container

    # -- exec --------------------------------------------------------------

    def _exec_target(self, ref: str) -> Container:
        container = self._manager.get(ref)
        if container.state.status == "paused":
            raise Conflict(f"Container {container.id} is paused, unpause the container "
                           "before exec")
        if container.state.status == "restarting":
            raise Conflict(f"Container {container.id} is restarting, wait until the "
                           "container is running")
        if container.state.status != "running" or not container.state.pid:
            raise Conflict(f"container {container.id} is not running")
        return container

    def exec_create(self, ref: str, config: container_pb2.ExecConfig) -> Exec:
        container = self._exec_target(ref)
        if not config.cmd:
            raise InvalidArgument("No exec command specified")
        if config.detach_keys:
            attach.parse_detach_keys(config.detach_keys)
        record = self.execs.create(container.id, config)
        self._publish(f"exec_create: {record.command}", container, execID=record.id)
        return record

    def _process(self, container: Container, config: container_pb2.ExecConfig) -> dict:
        bundle = self._manager.bundle(container)
        document = json.loads((bundle.path / "config.json").read_text())
        root = Path(f"/proc/{container.state.pid}/root")
        return process_spec(document["process"], config, root, container.config.user)

    async def exec_start(self, options: container_pb2.ExecStartOptions,
                         requests: AsyncIterator[Any]) -> AsyncIterator[Frame]:
        record = self.execs.get(options.exec_id)
        if options.console_size:
            del record.config.console_size[:]
            record.config.console_size.extend(options.console_size)
        try:
            container = self._exec_target(record.container_id)
            try:
                process = self._process(container, record.config)
            except BerthError as exc:   # such as a user the container does not know
                raise ExecStartFailed(exc.message, 126) from exc
            sock = await self.execs.start(record, process, attach=not options.detach)
        except (ExecStartFailed, BerthError) as failure:
            frame = Frame(stream=Frame.STDOUT, data=(failure.message + "\r\n").encode())
            if isinstance(failure, ExecStartFailed):
                record.exit_code = frame.exit_code = failure.exit_code
                if options.detach:
                    raise InvalidArgument(failure.message) from failure
            if options.detach:
                raise
            # The client's connection is already hijacked: Docker writes the
            # error into the stream.
            yield frame
            return
        self._publish(f"exec_start: {record.command}", container, execID=record.id)
        keep_task(self._reporters, asyncio.create_task(self._report_exit(record, container)))
        if sock is None:
            return
        attach_options = container_pb2.AttachOptions(
            stdin=record.config.attach_stdin, stdout=record.config.attach_stdout,
            stderr=record.config.attach_stderr, detach_keys=record.config.detach_keys)
        frames = attach.pump(sock, attach_options, record.config.tty, requests)
        async for frame in coalesce(frames):
            yield frame
            if frame.detached:
                return
        yield Frame(exit_code=await self.execs.wait(record))

    async def _report_exit(self, record: Exec, container: Container) -> None:
        code = await self.execs.wait(record)
        self._publish("exec_die", container, execID=record.id, exitCode=str(code))

    def exec_ids(self, container_id: str) -> list[str]:
        """Docker's ExecIDs: the container's execs not yet finished."""
        return [e.id for e in self.execs.of_container(container_id) if not e.done.is_set()]

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        self.execs.resize(self.execs.get(exec_id), height, width)

    def exec_inspect(self, exec_id: str) -> container_pb2.ExecInstance:
        record = self.execs.get(exec_id)
        config = record.config
        instance = container_pb2.ExecInstance(
            id=record.id, running=record.running, container_id=record.container_id,
            config=config, pid=record.pid, open_stdin=config.attach_stdin,
            open_stdout=config.attach_stdout, open_stderr=config.attach_stderr,
            detach_keys=config.detach_keys)
        if record.exit_code is not None:
            instance.exit_code = record.exit_code
        return instance

    async def run_probe(self, container_id: str, command: list[str], timeout: float
                        ) -> tuple[int, str]:
        """Run a healthcheck command as an exec; (exit code, output)."""
        container = self._exec_target(container_id)
        config = container_pb2.ExecConfig(cmd=command, attach_stdout=True, attach_stderr=True)
        record = self.execs.create(container.id, config)
        self._publish(f"exec_create: {record.command}", container, execID=record.id)
        try:
            sock = await self.execs.start(record, self._process(container, config),
                                          attach=True, timeout_seconds=max(1, int(timeout)))
        except ExecStartFailed as failure:
            self.execs.forget(record.id)
            return failure.exit_code, failure.message
        assert sock is not None
        self._publish(f"exec_start: {record.command}", container, execID=record.id)
        keep_task(self._reporters, asyncio.create_task(self._report_exit(record, container)))
        output = bytearray()
        options = container_pb2.AttachOptions(stdout=True, stderr=True)
        try:
            async with asyncio.timeout(timeout):
                async for frame in attach.pump(sock, options, False, None):
                    if len(output) < health.MAX_OUTPUT:
                        output += frame.data
                code = await self.execs.wait(record)
        except TimeoutError:
            await self.execs.kill(record)
            raise
        finally:
            self.execs.forget(record.id)
        return code, output.decode(errors="replace")

    # -- healthchecks ------------------------------------------------------

    def _start_health(self, container: Container) -> None:
        command = health.probe_command(container.config.healthcheck,
                                       list(container.config.shell))
        if command is None:
            return
        state = health.new_health()
        container.state.health = state

        def recorded(current: dict, changed: bool) -> None:
            container.state.health = current
            if changed:
                self._publish(f"health_status: {current['status']}", container)

        monitor = health.HealthMonitor(
            container.config.healthcheck, command,
            lambda cmd, timeout: self.run_probe(container.id, cmd, timeout), recorded, state,
            should_probe=lambda: container.state.status == "running")
        self._health.start(container.id, monitor)

    # -- file systems ------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _filesystem(self, container: Container, live: bool) -> AsyncIterator[str]:
        """The container's root: its live view with every mount (/proc/<pid>/root)
        when `live` and running, else the overlay rootfs, mounted for the
        duration when the container is stopped."""
        if live and container.state.pid and container.state.status in ("running", "paused"):
            yield f"/proc/{container.state.pid}/root"
            return
        bundle = self._manager.bundle(container)
        cid = container.id
        async with self._manager.lock(cid):
            if self._mount_users.get(cid, 0) == 0 and not container.running:
                await rootfs.mount_overlay(container.lower_dirs, bundle.path / "upper",
                                           bundle.path / "work", bundle.rootfs)
            self._mount_users[cid] = self._mount_users.get(cid, 0) + 1
        bound: list[str] = []
        try:
            if live:
                bound = await _bind_volumes(str(bundle.rootfs), container)
            yield str(bundle.rootfs)
        finally:
            for target in reversed(bound):
                await _run("umount", target)
            async with self._manager.lock(cid):
                self._mount_users[cid] -= 1
                if self._mount_users[cid] == 0:
                    del self._mount_users[cid]
                    if not container.running:
                        await rootfs.unmount(bundle.rootfs)

    @staticmethod
    def _not_found(path: str, container: Container) -> str:
        return f"Could not find the file {path} in container {container.name}"

    async def stat_path(self, ref: str, path: str) -> archive.PathInfo:
        container = self._manager.get(ref)
        async with self._filesystem(container, live=True) as root:
            return await asyncio.to_thread(archive.stat_path, root, path,
                                           self._not_found(path, container))

    async def get_archive(self, ref: str, path: str
                          ) -> AsyncIterator[archive.PathInfo | bytes]:
        """The path's stat first, then the tar's bytes."""
        container = self._manager.get(ref)
        async with self._filesystem(container, live=True) as root:
            info = await asyncio.to_thread(archive.stat_path, root, path,
                                           self._not_found(path, container))
            yield info
            async for chunk in tar_chrooted(root, partial(archive.write_tar, "/", path)):
                yield chunk
        self._publish("archive-path", container)

    async def put_archive(self, options: container_pb2.PutArchiveOptions,
                          data: AsyncIterator[bytes]) -> None:
        container = self._manager.get(options.id)
        async with self._filesystem(container, live=True) as root:
            host_dir = await asyncio.to_thread(archive.extraction_dir, root, options.path,
                                               self._not_found(options.path, container))
            if os.statvfs(host_dir).f_flag & os.ST_RDONLY:
                on_rootfs = os.stat(host_dir).st_dev == os.stat(root).st_dev
                raise PermissionDenied("container rootfs is marked read-only" if on_rootfs
                                       else "mounted volume is marked read-only")
            owner = None
            if options.copy_uid_gid and container.config.user:
                # Archive mode: the container's user owns what is copied in
                # (without a user, the tar's owners stay, as Docker does).
                user = rootfs.resolve_user(Path(root), container.config.user, [])
                owner = (user.uid, user.gid)
            extract = archive.ExtractOptions(
                no_overwrite_dir_non_dir=options.no_overwrite_dir_non_dir, owner=owner)
            await untar_chrooted(root, archive.container_path(root, host_dir), extract, data)
        self._publish("extract-to-dir", container)

    async def changes(self, ref: str) -> list[changes.Change]:
        container = self._manager.get(ref)
        upper = self._manager.bundle(container).path / "upper"
        if not upper.is_dir():
            return []
        return await asyncio.to_thread(changes.changes, str(upper), container.lower_dirs)

    async def export(self, ref: str) -> AsyncIterator[bytes]:
        container = self._manager.get(ref)
        async with self._filesystem(container, live=False) as root:
            async for chunk in tar_chrooted(root, partial(archive.write_tree_tar, "/")):
                yield chunk
        self._publish("export", container)

    # -- processes and resources -------------------------------------------

    def _cgroup(self, container: Container) -> str:
        return cgroups_path(self.config.instance_prefix, container.id)

    async def top(self, ref: str, ps_args: str) -> top.ProcessTable:
        container = self._running(ref)
        table = await top.top(stats.cgroup_pids(self._cgroup(container)), ps_args)
        self._publish("top", container)
        return table

    async def stats(self, ref: str, stream: bool, one_shot: bool
                    ) -> AsyncIterator[dict[str, Any]]:
        container = self._manager.get(ref)
        identity = {"name": "/" + container.name, "id": container.id}
        if not container.running or not container.state.pid:
            yield {**identity, "read": "", "preread": ""}
            return
        cgroup, pid = self._cgroup(container), container.state.pid
        previous = await asyncio.to_thread(stats.sample, cgroup, pid)
        if one_shot and not stream:
            yield {**previous, **identity}
            return
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            if not container.running:
                return
            current = await asyncio.to_thread(stats.sample, cgroup, pid)
            yield {**current, **identity, "preread": previous["read"],
                   "precpu_stats": previous["cpu_stats"]}
            if not stream:
                return
            previous = current

    async def update(self, request: container_pb2.UpdateContainerRequest) -> list[str]:
        container = self._manager.get(request.id)
        merged = update.merge(container.host_config, request)
        args = update.runc_update_args(request.resources, merged.resources)
        if container.running and args:
            await update.runc_update(self._runtime.binary, str(self._runtime.root),
                                     container.id, args)
        container.host_config.CopyFrom(merged)
        self._manager.save_host_config(container)
        self._publish("update", container)
        return []

    # -- commit ------------------------------------------------------------

    async def commit(self, request: container_pb2.CommitRequest,
                     commit_layer: CommitLayer) -> str:
        container = self._manager.get(request.container_id)
        tags = [f"{request.repo}:{request.tag or 'latest'}"] if request.repo else []
        if request.HasField("build_step"):
            layer_options = build_step_options(container.image_id, request.build_step)
        else:
            layer_options = commit_options(container, request)
        layer_options.comment, layer_options.author = request.comment, request.author
        layer_options.tags.extend(tags)
        layer_options.container_id = container.id
        upper = self._manager.bundle(container).path / "upper"

        async def messages() -> AsyncIterator[image_pb2.CommitLayerRequest]:
            yield image_pb2.CommitLayerRequest(options=layer_options)
            if upper.is_dir():
                async for chunk in tar_chrooted(str(upper),
                                                partial(changes.write_layer_tar, "/")):
                    yield image_pb2.CommitLayerRequest(data=chunk)

        paused_here = request.pause and container.state.status == "running"
        if paused_here:
            await self._runtime.pause(container.id)
        try:
            image_id = await commit_layer(messages())
        finally:
            if paused_here:
                await self._runtime.resume(container.id)
        if not request.HasField("build_step"):
            self._publish("commit", container, comment=request.comment, imageID=image_id,
                          imageRef=tags[0] if tags else "", author=request.author)
        return image_id


async def coalesce(frames: AsyncIterator[Frame], limit: int = 1 << 20
                   ) -> AsyncIterator[Frame]:
    """Join output frames that pile up while the client is slower than the
    process (conmon sends at most 8 KiB a packet): fewer, bigger messages."""
    queue: asyncio.Queue[Frame | None] = asyncio.Queue(maxsize=256)

    async def read() -> None:
        with contextlib.suppress(OSError):
            async for frame in frames:
                await queue.put(frame)
        await queue.put(None)

    reader = asyncio.create_task(read())
    try:
        while (frame := await queue.get()) is not None:
            while not frame.detached and not queue.empty() and len(frame.data) < limit:
                following = queue.get_nowait()
                if following is None or following.detached or following.stream != frame.stream:
                    yield frame
                    frame = following
                    if frame is None:
                        return
                    continue
                frame = Frame(stream=frame.stream, data=frame.data + following.data)
            yield frame
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await frames.aclose()


def commit_options(container: Container, request: container_pb2.CommitRequest
                   ) -> image_pb2.CommitLayerOptions:
    """POST /commit: the request's config and changes over the container's."""
    config = container_pb2.ContainerConfig()
    config.CopyFrom(request.config)
    apply_changes(config, list(request.changes))
    merge_commit_config(config, container.config)
    return image_pb2.CommitLayerOptions(
        parent=container.image_id, config=image_config(config),
        created_by=" ".join(container.config.cmd.values),
        container_config=image_config(container.config), architecture=_architecture(),
        os="linux")


def build_step_options(parent: str, step: container_pb2.BuildStep
                       ) -> image_pb2.CommitLayerOptions:
    """A builder's step: its config and history as given; the platform is the
    parent image's (the image service's default when left empty)."""
    return image_pb2.CommitLayerOptions(
        parent=parent, config=step.config, created_by=step.created_by,
        container_config=step.container_config)


def merge_commit_config(config: container_pb2.ContainerConfig,
                        base: container_pb2.ContainerConfig) -> None:
    """Docker's commit merge: what the user did not set comes from the container."""
    if not config.user:
        config.user = base.user
    if not config.entrypoint.values and not config.cmd.values:
        if base.HasField("cmd"):
            config.cmd.CopyFrom(base.cmd)
        if base.HasField("entrypoint"):
            config.entrypoint.CopyFrom(base.entrypoint)
    keys = {entry.partition("=")[0] for entry in config.env}
    config.env[:0] = [entry for entry in base.env if entry.partition("=")[0] not in keys]
    for key, value in base.labels.items():
        config.labels.setdefault(key, value)
    for port in base.exposed_ports:
        if port not in config.exposed_ports:
            config.exposed_ports.append(port)
    for volume in base.volumes:
        if volume not in config.volumes:
            config.volumes.append(volume)
    for name in ("working_dir", "stop_signal", "hostname", "domainname"):
        if not getattr(config, name):
            setattr(config, name, getattr(base, name))
    if not config.HasField("healthcheck"):
        config.healthcheck.CopyFrom(base.healthcheck)
    if not config.on_build:
        config.on_build.extend(base.on_build)
    if not config.shell:
        config.shell.extend(base.shell)


def image_config(config: container_pb2.ContainerConfig) -> image_pb2.ImageConfig:
    image = image_pb2.ImageConfig(
        user=config.user, exposed_ports=list(config.exposed_ports), env=list(config.env),
        volumes=list(config.volumes), working_dir=config.working_dir,
        labels=dict(config.labels), stop_signal=config.stop_signal, shell=list(config.shell),
        on_build=list(config.on_build), args_escaped=config.args_escaped,
        hostname=config.hostname, domainname=config.domainname, tty=config.tty,
        open_stdin=config.open_stdin, stdin_once=config.stdin_once,
        attach_stdin=config.attach_stdin, attach_stdout=config.attach_stdout,
        attach_stderr=config.attach_stderr, image=config.image)
    if config.HasField("cmd"):
        image.cmd.CopyFrom(config.cmd)
    if config.HasField("entrypoint"):
        image.entrypoint.CopyFrom(config.entrypoint)
    if config.HasField("healthcheck"):
        image.healthcheck.CopyFrom(config.healthcheck)
    return image


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


async def _run(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise Internal(f"{args[0]} failed: {err.decode(errors='replace').strip()}")


async def _bind_volumes(root: str, container: Container) -> list[str]:
    """Bind the volumes and bind mounts of a stopped container into its
    mounted rootfs, as they are when it runs; returns the targets."""
    bound: list[str] = []
    points = [m for m in container.mounts.mount_points() if m.type in ("volume", "bind")]
    try:
        for point in sorted(points, key=lambda m: len(m.destination)):
            target = archive.secure_join(root, point.destination)
            if not os.path.lexists(target):
                if os.path.isdir(point.source):
                    os.makedirs(target, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    Path(target).touch()
            await _run("mount", "--bind", point.source, target)
            bound.append(target)
            if not point.rw:
                await _run("mount", "-o", "remount,bind,ro", target)
    except BaseException:
        for target in reversed(bound):
            with contextlib.suppress(Internal):
                await _run("umount", target)
        raise
    return bound
