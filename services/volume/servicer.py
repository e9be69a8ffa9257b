"""gRPC servicer of the volume service: decode, call the domain, encode."""

from __future__ import annotations

from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from services.common.events import EventBus
from services.common.filters import Filters
from services.volume.volumes import VolumeManager, VolumeView


def encode_volume(view: VolumeView) -> volume_pb2.Volume:
    record = view.record
    return volume_pb2.Volume(
        name=record.name, driver=record.driver, mountpoint=view.mountpoint,
        created_at=record.created_at, labels=record.labels, options=record.options,
        scope="local", anonymous=record.anonymous,
        usage_data=volume_pb2.UsageData(size=view.size, ref_count=view.ref_count))


class VolumeServicer(volume_pb2_grpc.VolumeServiceServicer):
    def __init__(self, volumes: VolumeManager, events: EventBus) -> None:
        self._volumes = volumes
        self._events = events

    async def Create(self, request, context):  # noqa: N802 (gRPC naming)
        view, _ = await self._volumes.create(request.name, request.driver,
                                             dict(request.driver_opts), dict(request.labels))
        return encode_volume(view)

    async def Inspect(self, request, context):  # noqa: N802
        return encode_volume(self._volumes.inspect(request.name))

    async def List(self, request, context):  # noqa: N802
        views = await self._volumes.list(Filters.from_message(request.filters), request.usage)
        return volume_pb2.ListVolumesResponse(volumes=[encode_volume(v) for v in views])

    async def Remove(self, request, context):  # noqa: N802
        await self._volumes.remove(request.name, request.force)
        return volume_pb2.RemoveVolumeResponse()

    async def Prune(self, request, context):  # noqa: N802
        deleted, reclaimed = await self._volumes.prune(Filters.from_message(request.filters))
        return volume_pb2.PruneVolumesResponse(deleted=deleted, space_reclaimed=reclaimed)

    async def Acquire(self, request, context):  # noqa: N802
        acquired = await self._volumes.acquire(
            request.name, request.holder, request.driver, dict(request.driver_opts),
            dict(request.labels), request.anonymous, request.destination, request.read_only)
        return volume_pb2.AcquireVolumeResponse(
            volume=encode_volume(acquired.view), host_path=acquired.view.mountpoint,
            created=acquired.created)

    async def Release(self, request, context):  # noqa: N802
        removed = await self._volumes.release(request.name, request.holder,
                                              request.remove_anonymous)
        return volume_pb2.ReleaseVolumeResponse(removed=removed)

    async def ReleaseGone(self, request, context):  # noqa: N802
        gone = await self._volumes.release_gone(set(request.holders), request.before_nano)
        return volume_pb2.ReleaseGoneResponse(holders=gone)

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
