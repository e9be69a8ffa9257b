"""Wiring of the network service: build the domain objects, register the servicer."""

from __future__ import annotations

from berth.network.v1 import network_pb2, network_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.network.manager import NetworkManager
from services.network.servicer import NetworkServicer
from services.network.store import NetworkStore


async def setup(ctx: ServiceContext) -> list[str]:
    events = EventBus("network")
    store = NetworkStore(ctx.config.service_dir("network") / "state.db")
    manager = NetworkManager(ctx.config, store, events)
    await manager.start()

    async def stop() -> None:
        await manager.shutdown()
        store.close()

    ctx.on_shutdown.append(stop)
    ctx.counts = manager.counts
    network_pb2_grpc.add_NetworkServiceServicer_to_server(NetworkServicer(manager, events),
                                                          ctx.server)
    return [network_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name]
