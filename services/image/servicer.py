"""gRPC servicer of the image service: decode, call the domain, encode."""

from __future__ import annotations

from berth.image.v1 import image_pb2_grpc
from services.common.events import EventBus


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    def __init__(self, events: EventBus) -> None:
        self._events = events

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
