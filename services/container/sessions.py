"""Client sessions on a container: attach (replayed logs, then the live
stream joined to conmon's attach socket), logs (read and followed) and pty
resize. The lifecycle is the manager's; attaches meet starts through its
PendingAttaches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from berth.container.v1 import container_pb2
from services.common.errors import Conflict, InvalidArgument, Unimplemented
from services.container import attach, logdrivers, logs
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.store import Container


class Sessions:
    def __init__(self, manager: Manager, events: ContainerEvents) -> None:
        self._manager = manager
        self._events = events

    async def attach(self, requests: AsyncIterator[container_pb2.AttachRequest]
                     ) -> AsyncIterator[container_pb2.IOFrame]:
        """An attach session: the first request carries the options."""
        manager = self._manager
        async with manager.attaches.opening():
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("part") != "options":
                raise InvalidArgument("the first attach message must carry the options")
            options = first.options
            container = manager.get(options.id)
            waiter = self._register(container, options)
        self._events.publish("attach", container)
        yield container_pb2.IOFrame(attached=True)
        try:
            if options.logs:
                async for frame in self._replay_logs(container, options):
                    yield frame
            if not options.stream:
                return
            if waiter is None:
                sock = manager.runtime.connect_attach(manager.bundle(container))
            else:
                sock = await waiter
            if sock is None:
                return
            async for frame in attach.pump(sock, options, container.config.tty, requests):
                yield frame
        finally:
            if waiter is not None:
                manager.attaches.drop(container.id, waiter)

    def _register(self, container: Container, options: container_pb2.AttachOptions
                  ) -> asyncio.Future | None:
        """Check that the container can be attached; a future for the conmon
        socket when it is not running: as in Docker, the session then waits for
        the next start (`docker start -a` attaches first)."""
        status = container.state.status
        attach.detach_keys(options.detach_keys, options.no_detach_keys)
        if status == "paused":
            raise Conflict(f"container {options.id} is paused, unpause the container before "
                           "attach")
        if status == "restarting":
            raise Conflict(f"container {options.id} is restarting, wait until the container "
                           "is running")
        if not options.stream or status == "running":
            return None
        return self._manager.attaches.wait_for_start(container.id)

    async def _replay_logs(self, container: Container, options: container_pb2.AttachOptions
                           ) -> AsyncIterator[container_pb2.IOFrame]:
        streams = {name for name, wanted in (("stdout", options.stdout),
                                             ("stderr", options.stderr)) if wanted}
        lines, _ = await asyncio.to_thread(logs.read_lines, self._manager.bundle(container).log)
        for line in lines:
            if line.stream in streams:
                stream = (container_pb2.IOFrame.STDERR if line.stream == "stderr"
                          else container_pb2.IOFrame.STDOUT)
                yield container_pb2.IOFrame(stream=stream, data=line.data)

    async def logs(self, request: container_pb2.LogsRequest) -> AsyncIterator[logs.LogLine]:
        manager = self._manager
        container = manager.get(request.id)
        if container.host_config.log_config.type == "none":
            raise Unimplemented("configured logging driver does not support reading")
        streams = {name for name, wanted in (("stdout", request.stdout),
                                             ("stderr", request.stderr)) if wanted}
        if request.tail and request.tail != "all" and not request.tail.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid value for \"tail\": \"{request.tail}\"")
        path = manager.bundle(container).log
        # Whether to follow is decided before the read: a container that
        # exits during it wrote its last lines after them.
        was_running = container.running
        lines, offset = await asyncio.to_thread(logs.read_lines, path)
        for line in logs.select(lines, streams, request.since_nano,
                                request.until_nano, request.tail):
            yield line
        if not request.follow or not was_running:
            return
        cid = container.id
        async for line in logs.follow(path, offset, streams, request.until_nano,
                                      lambda: cid in manager.containers and container.running):
            yield line

    def log_attributes(self, ref: str) -> dict[str, str]:
        """The attributes `docker logs --details` shows for the container's lines."""
        container = self._manager.get(ref)
        log_config = container.host_config.log_config
        tag = logdrivers.render_tag(log_config.config.get("tag", ""), container.config,
                                    container.id, container.name, container.image_id)
        return logdrivers.extra_attributes(log_config, container.config, tag)

    async def resize(self, ref: str, height: int, width: int) -> None:
        container = self._manager.get(ref)
        if container.state.status not in ("running", "paused"):
            raise Conflict(f"Container {container.id} is not running")
        self._manager.runtime.resize(self._manager.bundle(container), height, width)
        self._events.publish("resize", container, height=str(height), width=str(width))
