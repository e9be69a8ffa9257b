"""Wiring of the image service: build the domain objects, register the servicer."""

from __future__ import annotations

from berth.image.v1 import image_pb2, image_pb2_grpc
from services.common.events import EventBus
from services.common.server import ServiceContext
from services.image.distribution import Distribution
from services.image.images import Images
from services.image.ingest import Ingest
from services.image.registry import Registries
from services.image.removal import Removal
from services.image.servicer import ImageServicer


async def setup(ctx: ServiceContext) -> list[str]:
    events = EventBus("image")
    images = Images(ctx.config.service_dir("image"), events)
    registries = Registries(ctx.config.engine)
    ctx.counts = lambda: {"images": images.count(), "layer_bytes": images.layer_bytes()}
    ctx.on_shutdown.append(registries.close)
    removal = Removal(images)
    ingest = Ingest(images, removal)
    removal.collect_garbage()  # layers and blobs of work a crash interrupted
    distribution = Distribution(images, ingest, registries, ctx.config.engine)

    async def reload(engine: dict) -> None:
        registries.configure(engine)
        distribution.configure(engine)
    ctx.on_reload.append(reload)
    servicer = ImageServicer(images, removal, ingest, events, distribution)
    image_pb2_grpc.add_ImageServiceServicer_to_server(servicer, ctx.server)
    return [image_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name]
