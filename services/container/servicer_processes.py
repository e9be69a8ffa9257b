"""gRPC methods for processes in a running container: exec, top, stats and
update. Mixed into ContainerServicer, which sets `self._processes`
(processes.py) and `self._resources` (resources.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from berth.container.v1 import container_pb2
from services.common.errors import InvalidArgument
from services.container.processes import Processes
from services.container.resources import Resources


async def first_options(requests: AsyncIterator[Any], field: str = "options") -> Any:
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("part") != field:
        raise InvalidArgument(f"the first message must carry the {field}")
    return getattr(first, field)


class ProcessServicerMixin:
    _processes: Processes
    _resources: Resources

    async def ExecCreate(self, request, context):  # noqa: N802
        record = self._processes.exec_create(request.container_id, request.config)
        return container_pb2.ExecCreateResponse(id=record.id)

    async def ExecStart(self, request_iterator, context):  # noqa: N802
        options = await first_options(request_iterator)
        async for frame in self._processes.exec_start(options, request_iterator):
            yield frame

    async def ExecResize(self, request, context):  # noqa: N802
        self._processes.exec_resize(request.exec_id, request.height, request.width)
        return container_pb2.ResizeResponse()

    async def ExecInspect(self, request, context):  # noqa: N802
        return self._processes.exec_inspect(request.exec_id)

    async def Top(self, request, context):  # noqa: N802
        table = await self._resources.top(request.id, request.ps_args)
        return container_pb2.TopResponse(
            titles=table.titles,
            processes=[container_pb2.TopRow(values=row) for row in table.processes])

    async def Stats(self, request, context):  # noqa: N802
        async for sample in self._resources.stats(request.id, request.stream, request.one_shot):
            yield json_format.ParseDict(sample, container_pb2.ContainerStats())

    async def Update(self, request, context):  # noqa: N802
        warnings = await self._resources.update(request)
        return container_pb2.UpdateContainerResponse(warnings=warnings)
