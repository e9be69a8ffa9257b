"""Processes run inside a running container: execs (docker exec) and the
healthchecks, whose probes run as execs. On top of the lifecycle Manager
(container lookup, bundle, runtime)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from berth.container.v1 import container_pb2
from berth.types.v1 import types_pb2
from services.common.config import Config
from services.common.errors import (
    BerthError,
    Conflict,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
)
from services.common.tasks import keep_task
from services.container import attach, health
from services.container.chroot_thread import run_chrooted
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.exec import (
    Exec,
    ExecManager,
    ExecStartFailed,
    exec_user,
    process_spec,
)
from services.container.store import Container

Frame = container_pb2.IOFrame
log = logging.getLogger("berth.container")


class Processes:
    def __init__(self, config: Config, manager: Manager, events: ContainerEvents) -> None:
        self._manager = manager
        self._events = events
        self.execs = ExecManager(config.exec_root / "container", manager.runtime)
        self._health = health.HealthTasks()
        self._watcher: asyncio.Task | None = None
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
        async for event in self._events.bus.subscribe(types_pb2.SubscribeRequest()):
            if event.type != "container":
                continue
            if event.action == "start":
                with contextlib.suppress(BerthError):
                    self._start_health(self._manager.get(event.actor_id))
            elif event.action in ("die", "destroy"):
                self._health.stop(event.actor_id)
                if event.action == "die":
                    self._forget_unstarted_execs(event.actor_id)
                    with contextlib.suppress(BerthError):
                        health.mark_stopped(self._manager.get(event.actor_id).state.health)
                if event.action == "destroy":
                    self.execs.forget_container(event.actor_id)

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
        attach.detach_keys(config.detach_keys, config.no_detach_keys)
        record = self.execs.create(container.id, config, container.state.started_ns)
        self._events.publish(f"exec_create: {record.command}", container, execID=record.id)
        return record

    async def _process(self, container: Container, config: container_pb2.ExecConfig) -> dict:
        bundle = self._manager.bundle(container)
        document = json.loads((bundle.path / "config.json").read_text())
        user_spec = config.user or container.config.user
        user = None
        if user_spec:
            # Chrooted: a link the container swaps into its /etc meanwhile
            # never makes the lookup read a host file.
            user = await run_chrooted(f"/proc/{container.state.pid}/root", partial(
                exec_user, user_spec, container.host_config))
        return process_spec(document["process"], config, user)

    def _in_its_run(self, record: Exec) -> bool:
        """Whether the container still runs the run the exec was created in."""
        container = self._manager.containers.get(record.container_id)
        return (container is not None and container.state.status in ("running", "paused")
                and container.state.started_ns == record.run_started_ns)

    def _exec(self, exec_id: str) -> Exec:
        """An exec not started ends with its container's run, as Docker drops
        it when the container exits (a later start or inspect: no such exec).
        Checked here too, not only on the die event, which comes later."""
        record = self.execs.get(exec_id)
        if not record.started and not self._in_its_run(record):
            self.execs.forget(exec_id)
            raise NotFound(f"No such exec instance: {exec_id}")
        return record

    def _forget_unstarted_execs(self, container_id: str) -> None:
        for record in self.execs.of_container(container_id):
            if not record.started:
                self.execs.forget(record.id)

    async def exec_start(self, options: container_pb2.ExecStartOptions,
                         requests: AsyncIterator[Any]) -> AsyncIterator[Frame]:
        record = self._exec(options.exec_id)
        if options.console_size:
            del record.config.console_size[:]
            record.config.console_size.extend(options.console_size)
        try:
            container = self._exec_target(record.container_id)
            sock = await self._start_process(record, container, options.detach)
        except (ExecStartFailed, BerthError) as failure:
            frame = Frame(stream=Frame.STDOUT, data=(failure.message + "\r\n").encode())
            if isinstance(failure, ExecStartFailed):
                record.exit_code = frame.exit_code = failure.exit_code
                if options.detach:
                    error = Internal if failure.internal else InvalidArgument
                    raise error(failure.message) from failure
            if options.detach:
                raise
            # The client's connection is already hijacked: Docker writes the
            # error into the stream.
            yield frame
            return
        self._events.publish(f"exec_start: {record.command}", container, execID=record.id)
        keep_task(self._reporters, asyncio.create_task(self._report_exit(record, container)))
        if sock is None:
            return
        attach_options = container_pb2.AttachOptions(
            stdin=record.config.attach_stdin, stdout=record.config.attach_stdout,
            stderr=record.config.attach_stderr, detach_keys=record.config.detach_keys,
            no_detach_keys=record.config.no_detach_keys)
        frames = attach.pump(sock, attach_options, record.config.tty, requests)
        deadline = (asyncio.get_running_loop().time() + options.timeout_seconds
                    if options.timeout_seconds > 0 else None)
        async for frame in self._until(deadline, record, coalesce(frames)):
            yield frame
            if frame.detached:
                return
        async for code in self._until(deadline, record, _exit_code(self.execs, record)):
            yield Frame(exit_code=code)

    async def _start_process(self, record: Exec, container: Container,
                             detach: bool) -> socket.socket | None:
        """Start the exec's process. An unexpected failure is logged and
        reported like a process that could not start (Docker's 126), never
        as a silent end of the stream that `docker exec` takes for exit 0."""
        try:
            try:
                process = await self._process(container, record.config)
            except BerthError as exc:   # such as a user the container does not know
                raise ExecStartFailed(exc.message, 126) from exc
            return await self.execs.start(record, process, attach=not detach)
        except (ExecStartFailed, BerthError):
            raise
        except Exception as exc:
            log.exception("exec %s in %s failed to start", record.id[:12],
                          container.id[:12])
            raise ExecStartFailed(f"failed to start exec process: {exc}", 126,
                                  internal=True) from exc

    async def _until(self, deadline: float | None, record: Exec,
                     items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """`items` until `deadline` (loop time); past it the exec is killed
        and the call fails. The wait never spans a yield, so only this
        generator's own awaits are cut short."""
        iterator = aiter(items)
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                await self.execs.kill(record)
                raise DeadlineExceeded(f"timeout exceeded running {record.command}") from None
            yield item

    async def _report_exit(self, record: Exec, container: Container) -> None:
        code = await self.execs.wait(record)
        self._events.publish("exec_die", container, execID=record.id, exitCode=str(code))

    def exec_ids(self, container_id: str) -> list[str]:
        """Docker's ExecIDs: the container's execs not yet finished."""
        return [e.id for e in self.execs.of_container(container_id)
                if not e.done.is_set() and (e.started or self._in_its_run(e))]

    def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        self.execs.resize(self.execs.get(exec_id), height, width)

    def exec_inspect(self, exec_id: str) -> container_pb2.ExecInstance:
        record = self._exec(exec_id)
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
        self._events.publish(f"exec_create: {record.command}", container, execID=record.id)
        try:
            sock = await self.execs.start(record, await self._process(container, config),
                                          attach=True, timeout_seconds=max(1, int(timeout)))
        except ExecStartFailed as failure:
            self.execs.forget(record.id)
            return failure.exit_code, failure.message
        assert sock is not None
        self._events.publish(f"exec_start: {record.command}", container, execID=record.id)
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
                self._events.publish(f"health_status: {current['status']}", container)

        monitor = health.HealthMonitor(
            container.config.healthcheck, command,
            lambda cmd, timeout: self.run_probe(container.id, cmd, timeout), recorded, state,
            should_probe=lambda: container.state.status == "running")
        self._health.start(container.id, monitor)


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


async def _exit_code(execs: ExecManager, record: Exec) -> AsyncIterator[int]:
    yield await execs.wait(record)
