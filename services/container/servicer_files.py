"""gRPC methods for a container's files: docker cp (stat, get, put), diff,
export and commit, and KeepMounted (a container's own file system kept
mounted while the caller, the builder, reads it). Mixed into
ContainerServicer, which sets `self._files` (files.py) and `self._commits`
(commit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from berth.container.v1 import container_pb2
from berth.types.v1 import types_pb2
from services.common.errors import BerthError
from services.container.commit import Commits
from services.container.files import Files
from services.container.servicer_processes import first_options


def _path_stat(info: Any) -> container_pb2.PathStat:
    return container_pb2.PathStat(name=info.name, size=info.size, mode=info.mode,
                                  mtime=info.mtime, link_target=info.link_target)


class FilesServicerMixin:
    _files: Files
    _commits: Commits

    async def StatPath(self, request, context):  # noqa: N802
        return _path_stat(await self._files.stat_path(request.id, request.path,
                                                      request.rootfs_only))

    async def GetArchive(self, request, context):  # noqa: N802
        async for part in self._files.get_archive(request.id, request.path,
                                                  request.rootfs_only):
            if isinstance(part, bytes):
                yield container_pb2.ArchiveChunk(data=part)
            else:
                yield container_pb2.ArchiveChunk(stat=_path_stat(part))

    async def KeepMounted(self, request, context):  # noqa: N802
        async with self._files.kept_mounted(request.id):
            yield container_pb2.KeptMounted()
            await asyncio.Event().wait()   # until the caller cancels

    async def PutArchive(self, request_iterator, context):  # noqa: N802
        options = await first_options(request_iterator)

        async def data() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") == "data":
                    yield message.data

        try:
            await self._files.put_archive(options, data())
        except BerthError:
            # Take the rest of the upload, so that a client still sending
            # reads the error instead of a broken pipe.
            async for _ in request_iterator:
                pass
            raise
        return container_pb2.PutArchiveResponse()

    async def Changes(self, request, context):  # noqa: N802
        found = await self._files.changes(request.id)
        return container_pb2.ChangesResponse(
            changes=[container_pb2.Change(path=c.path, kind=c.kind) for c in found])

    async def Export(self, request, context):  # noqa: N802
        async for chunk in self._files.export(request.id):
            yield types_pb2.Chunk(data=chunk)

    async def Commit(self, request, context):  # noqa: N802
        return container_pb2.CommitResponse(id=await self._commits.commit(request))
