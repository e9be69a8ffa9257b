"""Wiring of the build service: build the domain objects, register the servicer."""

from __future__ import annotations

import asyncio

from berth.build.v1 import build_pb2, build_pb2_grpc
from services.builder.builder import Builder
from services.builder.cache import BuildCache
from services.builder.holds import HoldSweeper
from services.builder.peers import Peers
from services.builder.servicer import BuildServicer
from services.builder.store import CacheStore
from services.common.events import EventBus
from services.common.server import ServiceContext


async def setup(ctx: ServiceContext) -> list[str]:
    events = EventBus("builder")
    directory = ctx.config.service_dir("build")
    store = CacheStore(directory / "state.db")
    peers = Peers(ctx.config)
    builder = Builder(peers, store, directory / "tmp")
    servicer = BuildServicer(builder, BuildCache(store, peers, events, builder.contexts), events)
    build_pb2_grpc.add_BuildServiceServicer_to_server(servicer, ctx.server)

    holds = HoldSweeper(ctx.config, builder.live_holders)
    builder.missed_release = holds.missed
    holds.start()
    cleanup = asyncio.create_task(builder.let_go_of_leftovers())

    async def close() -> None:
        cleanup.cancel()
        await holds.close()
        await peers.close()
        store.db.close()
    ctx.on_shutdown.append(close)
    return [build_pb2.DESCRIPTOR.services_by_name["BuildService"].full_name]
