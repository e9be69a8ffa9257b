"""Wiring of the volume service: build the domain objects, register the servicer."""

from __future__ import annotations

import asyncio
import contextlib

from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.volume.local import LocalDriver
from services.volume.servicer import VolumeServicer
from services.volume.store import VolumeStore
from services.volume.volumes import VolumeManager


async def setup(ctx: ServiceContext) -> list[str]:
    root = ctx.config.service_dir("volume")
    events = EventBus("volume")
    store = VolumeStore(root / "state.db")
    volumes = VolumeManager(store, LocalDriver(root / "volumes"), events)
    await volumes.reconcile()
    measuring = asyncio.create_task(volumes.measure_forever())

    async def stop_measuring() -> None:
        measuring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await measuring
        store.db.close()

    ctx.on_shutdown.append(stop_measuring)
    ctx.counts = lambda: {"volumes": store.count()}
    volume_pb2_grpc.add_VolumeServiceServicer_to_server(VolumeServicer(volumes, events),
                                                        ctx.server)
    return [volume_pb2.DESCRIPTOR.services_by_name["VolumeService"].full_name]
