"""Wiring of the container service: build the domain objects, register the servicer."""

from __future__ import annotations

from berth.container.v1 import container_pb2, container_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.container.servicer import ContainerServicer


async def setup(ctx: ServiceContext) -> list[str]:
    events = EventBus("container")
    container_pb2_grpc.add_ContainerServiceServicer_to_server(ContainerServicer(events), ctx.server)
    return [container_pb2.DESCRIPTOR.services_by_name["ContainerService"].full_name]
