"""gRPC servicer of the network service: decode, call the domain, encode."""

from __future__ import annotations

from berth.network.v1 import network_pb2_grpc
from services.common.events import EventBus


class NetworkServicer(network_pb2_grpc.NetworkServiceServicer):
    def __init__(self, events: EventBus) -> None:
        self._events = events

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
