"""gRPC methods for work inside a running container: exec, archive (cp),
top, stats, changes, export, commit, update. Mixed into ContainerServicer,
which sets `self._inside` (the domain, services/container/inside.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.types.v1 import types_pb2
from services.common.clients import channel
from services.common.errors import BerthError, InvalidArgument, from_rpc
from services.container.inside import Inside


def _path_stat(info: Any) -> container_pb2.PathStat:
    return container_pb2.PathStat(name=info.name, size=info.size, mode=info.mode,
                                  mtime=info.mtime, link_target=info.link_target)


async def _first_options(requests: AsyncIterator[Any], field: str = "options") -> Any:
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("part") != field:
        raise InvalidArgument(f"the first message must carry the {field}")
    return getattr(first, field)


class InsideServicerMixin:
    _inside: Inside
    _image_stub: image_pb2_grpc.ImageServiceStub | None = None

    async def ExecCreate(self, request, context):  # noqa: N802
        record = self._inside.exec_create(request.container_id, request.config)
        return container_pb2.ExecCreateResponse(id=record.id)

    async def ExecStart(self, request_iterator, context):  # noqa: N802
        options = await _first_options(request_iterator)
        async for frame in self._inside.exec_start(options, request_iterator):
            yield frame

    async def ExecResize(self, request, context):  # noqa: N802
        self._inside.exec_resize(request.exec_id, request.height, request.width)
        return container_pb2.ResizeResponse()

    async def ExecInspect(self, request, context):  # noqa: N802
        return self._inside.exec_inspect(request.exec_id)

    async def StatPath(self, request, context):  # noqa: N802
        return _path_stat(await self._inside.stat_path(request.id, request.path))

    async def GetArchive(self, request, context):  # noqa: N802
        async for part in self._inside.get_archive(request.id, request.path):
            if isinstance(part, bytes):
                yield container_pb2.ArchiveChunk(data=part)
            else:
                yield container_pb2.ArchiveChunk(stat=_path_stat(part))

    async def PutArchive(self, request_iterator, context):  # noqa: N802
        options = await _first_options(request_iterator)

        async def data() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") == "data":
                    yield message.data

        try:
            await self._inside.put_archive(options, data())
        except BerthError:
            # Take the rest of the upload, so that a client still sending
            # reads the error instead of a broken pipe.
            async for _ in request_iterator:
                pass
            raise
        return container_pb2.PutArchiveResponse()

    async def Changes(self, request, context):  # noqa: N802
        found = await self._inside.changes(request.id)
        return container_pb2.ChangesResponse(
            changes=[container_pb2.Change(path=c.path, kind=c.kind) for c in found])

    async def Export(self, request, context):  # noqa: N802
        async for chunk in self._inside.export(request.id):
            yield types_pb2.Chunk(data=chunk)

    async def Top(self, request, context):  # noqa: N802
        table = await self._inside.top(request.id, request.ps_args)
        return container_pb2.TopResponse(
            titles=table.titles,
            processes=[container_pb2.TopRow(values=row) for row in table.processes])

    async def Stats(self, request, context):  # noqa: N802
        async for sample in self._inside.stats(request.id, request.stream, request.one_shot):
            yield json_format.ParseDict(sample, container_pb2.ContainerStats())

    async def Update(self, request, context):  # noqa: N802
        warnings = await self._inside.update(request)
        return container_pb2.UpdateContainerResponse(warnings=warnings)

    async def Commit(self, request, context):  # noqa: N802
        image_id = await self._inside.commit(request, self._commit_layer)
        return container_pb2.CommitResponse(id=image_id)

    async def _commit_layer(self, messages: AsyncIterator[image_pb2.CommitLayerRequest]
                            ) -> str:
        if self._image_stub is None:
            self._image_stub = image_pb2_grpc.ImageServiceStub(
                channel(self._inside.config, "image"))
        try:
            reply = await self._image_stub.CommitLayer(messages)
        except grpc.aio.AioRpcError as error:
            raise from_rpc("image", error) from error
        return reply.id
