"""gRPC servicer of the volume service: decode, call the domain, encode."""

from __future__ import annotations

from berth.volume.v1 import volume_pb2_grpc
from services.common.events import EventBus


class VolumeServicer(volume_pb2_grpc.VolumeServiceServicer):
    def __init__(self, events: EventBus) -> None:
        self._events = events

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
