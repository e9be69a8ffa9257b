"""gRPC servicer of the container service: decode, call the domain, encode.

Lifecycle, IO and logs are here; the RPCs that work inside a running
container (exec, archive, top, stats, changes, export, commit, update) are in
servicer_inside.py, mixed in below.
"""

from __future__ import annotations

from berth.container.v1 import container_pb2_grpc
from services.common.events import EventBus
from services.container.servicer_inside import InsideServicerMixin


class ContainerServicer(InsideServicerMixin, container_pb2_grpc.ContainerServiceServicer):
    def __init__(self, events: EventBus) -> None:
        self._events = events

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
