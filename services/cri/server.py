"""Wiring of the cri service: the CRI runtime and image services of kubelet,
on E/cri.sock (or `--cri-listen`)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from k8s.runtime.v1 import api_pb2, api_pb2_grpc
from services.common.server import ServiceContext
from services.cri import recovery
from services.cri.containers import Containers
from services.cri.events import ContainerEvents
from services.cri.image_servicer import ImageServicer
from services.cri.images import Images
from services.cri.imagevolumes import ImageVolumes
from services.cri.metrics import CriCollector
from services.cri.peers import Peers
from services.cri.podmetrics import PodMetrics
from services.cri.runtime_servicer import RuntimeServicer
from services.cri.sandboxes import Sandboxes
from services.cri.stats import Stats
from services.cri.status import RuntimeInfo
from services.cri.store import CriStore
from services.cri.streaming import StreamingServer


async def setup(ctx: ServiceContext) -> list[str]:
    store = CriStore(ctx.config.service_dir("cri") / "state.db")
    peers = Peers(ctx.config)
    images = Images(ctx.config, peers)
    sandboxes = Sandboxes(ctx.config, store, peers, images)
    containers = Containers(store, peers, sandboxes, ImageVolumes(ctx.config, peers))

    tls = ctx.config.cri_streaming_tls
    streaming = StreamingServer(peers.containers, ctx.config.cri_streaming_address,
                                *(tls or (None, None)))
    await streaming.start()
    reconciling = asyncio.create_task(
        recovery.reconcile(peers, sandboxes, containers, time.time_ns()))
    sweeper = recovery.PeerSweeper(ctx.config, sandboxes, containers)
    sweeper.start()

    async def close() -> None:
        reconciling.cancel()
        await sweeper.close()
        await streaming.stop()
        await peers.close()
        store.close()

    ctx.on_shutdown.append(close)
    REGISTRY.register(CriCollector(lambda: (
        [s.state for s in list(sandboxes.sandboxes.values())], len(containers.records))))
    ctx.counts = lambda: {"sandboxes": len(sandboxes.sandboxes),
                          "containers": len(containers.records)}
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(
        RuntimeServicer(sandboxes, containers, Stats(peers, sandboxes, containers),
                        PodMetrics(peers, sandboxes, containers),
                        ContainerEvents(peers, sandboxes, containers), RuntimeInfo(peers),
                        streaming), ctx.server)
    api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(images), ctx.server)
    return [api_pb2.DESCRIPTOR.services_by_name[name].full_name
            for name in ("RuntimeService", "ImageService")]
