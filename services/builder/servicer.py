"""gRPC servicer of the build service: decode, call the domain, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

from berth.build.v1 import build_pb2, build_pb2_grpc
from berth.types.v1 import types_pb2
from services.builder.builder import Builder
from services.builder.cache import BuildCache
from services.builder.options import BuildOptions
from services.common.errors import InvalidArgument
from services.common.events import EventBus
from services.common.filters import Filters


def decode_options(options: build_pb2.BuildOptions) -> BuildOptions:
    return BuildOptions(
        dockerfile=options.dockerfile, tags=list(options.tags),
        build_args=dict(options.build_args), labels=dict(options.labels),
        target=options.target, no_cache=options.no_cache,
        cache_from=list(options.cache_from), pull=options.pull,
        remove=options.remove, force_remove=options.force_remove, quiet=options.quiet,
        network_mode=options.network_mode, extra_hosts=list(options.extra_hosts),
        shm_size=options.shm_size, memory=options.memory, memory_swap=options.memory_swap,
        cpu_shares=options.cpu_shares, cpu_period=options.cpu_period,
        cpu_quota=options.cpu_quota, cpuset_cpus=options.cpuset_cpus,
        platform=options.platform, auth_configs=dict(options.auth_configs))


def encode_message(message: dict) -> types_pb2.Progress:
    progress = types_pb2.Progress(
        id=message.get("id", ""), status=message.get("status", ""),
        progress=message.get("progress", ""), stream=message.get("stream", ""))
    if "aux" in message:
        progress.aux.id = message["aux"]["ID"]
    return progress


async def _context_chunks(requests: AsyncIterator[build_pb2.BuildRequest]
                         ) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request.context


class BuildServicer(build_pb2_grpc.BuildServiceServicer):
    def __init__(self, builder: Builder, cache: BuildCache, events: EventBus) -> None:
        self._builder = builder
        self._cache = cache
        self._events = events

    async def Build(self, request_iterator, context):  # noqa: N802
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("options"):
            raise InvalidArgument("the first message of a build must carry its options")
        async for message in self._builder.build(decode_options(first.options),
                                                 _context_chunks(request_iterator)):
            yield encode_message(message)

    async def Prune(self, request, context):  # noqa: N802
        deleted, reclaimed = await self._cache.prune(
            request.all, request.keep_storage, Filters.from_message(request.filters))
        return build_pb2.PruneBuildCacheResponse(caches_deleted=deleted,
                                                 space_reclaimed=reclaimed)

    async def DiskUsage(self, request, context):  # noqa: N802
        return build_pb2.BuildDiskUsageResponse(records=[
            build_pb2.BuildCacheRecord(
                id=view.record.key, parent=view.record.parent, type=view.type,
                description=view.record.description, in_use=view.in_use, shared=view.shared,
                size=view.record.size, created_at=view.created_at_rfc3339,
                last_used_at=view.last_used_at_rfc3339, usage_count=view.record.usage_count)
            for view in await self._cache.records()])

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
