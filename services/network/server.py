"""Wiring of the network service: build the domain objects, register the servicer."""

from __future__ import annotations

from berth.network.v1 import network_pb2, network_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.network.servicer import NetworkServicer


async def setup(ctx: ServiceContext) -> list[str]:
    events = EventBus("network")
    network_pb2_grpc.add_NetworkServiceServicer_to_server(NetworkServicer(events), ctx.server)
    return [network_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name]
