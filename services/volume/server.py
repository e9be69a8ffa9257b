"""Wiring of the volume service: build the domain objects, register the servicer."""

from __future__ import annotations

from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.volume.servicer import VolumeServicer


async def setup(ctx: ServiceContext) -> list[str]:
    events = EventBus("volume")
    volume_pb2_grpc.add_VolumeServiceServicer_to_server(VolumeServicer(events), ctx.server)
    return [volume_pb2.DESCRIPTOR.services_by_name["VolumeService"].full_name]
