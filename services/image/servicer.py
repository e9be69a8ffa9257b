"""gRPC servicer of the image service: decode, call the domain, encode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.types.v1 import types_pb2
from services.common.errors import InvalidArgument
from services.common.events import EventBus
from services.image import reference
from services.image.codec import config_from_json
from services.image.images import DeleteItem, ImageRecord, Images


def encode_image(record: ImageRecord) -> image_pb2.Image:
    config = record.config
    return image_pb2.Image(
        id=record.id, repo_tags=record.repo_tags, repo_digests=record.repo_digests,
        parent=record.row.parent, comment=config.get("comment") or "",
        created=config.get("created") or "", docker_version=config.get("docker_version") or "",
        author=config.get("author") or "", config=config_from_json(config.get("config")),
        architecture=config.get("architecture") or "", variant=config.get("variant") or "",
        os=config.get("os") or "", size=record.row.size, layers=record.diff_ids,
        last_tag_time=record.row.last_tag_time, labels=record.labels,
        containers=record.containers)


def encode_items(items: list[DeleteItem]) -> list[image_pb2.DeleteItem]:
    return [image_pb2.DeleteItem(untagged=i.untagged, deleted=i.deleted) for i in items]


def decode_filters(filters: types_pb2.Filters) -> dict[str, list[str]]:
    return {key: list(values.values) for key, values in filters.filters.items()}


async def spool(requests: AsyncIterator, path: Path, options_field: str) -> object:
    """Write the `data` parts of a client stream to `path`; returns the options."""
    options = None
    with path.open("wb") as file:
        async for message in requests:
            if message.WhichOneof("part") == options_field:
                options = getattr(message, options_field)
            elif message.data:
                await asyncio.to_thread(file.write, message.data)
    return options


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: Images, events: EventBus) -> None:
        self._images = images
        self._events = events

    async def List(self, request, context):  # noqa: N802
        records = self._images.list(decode_filters(request.filters), show_all=request.all)
        return image_pb2.ListImagesResponse(images=[encode_image(r) for r in records])

    async def Inspect(self, request, context):  # noqa: N802
        return encode_image(self._images.inspect(request.name))

    async def Tag(self, request, context):  # noqa: N802
        self._images.tag(request.source,
                         reference.parse_repository(request.repo, request.tag))
        return image_pb2.TagResponse()

    async def Remove(self, request, context):  # noqa: N802
        items = self._images.remove(request.name, request.force, not request.no_prune)
        return image_pb2.RemoveImageResponse(items=encode_items(items))

    async def Load(self, request_iterator, context):  # noqa: N802
        path = self._images.content.temp_path(".tar")
        try:
            await spool(request_iterator, path, "options")
            if path.stat().st_size == 0:
                raise InvalidArgument("no images found in the archive")
            loaded = await self._images.load(path)
        finally:
            path.unlink(missing_ok=True)
        for _, messages in loaded:
            for line in messages:
                yield types_pb2.Progress(stream=line + "\n")

    async def AcquireRootfs(self, request, context):  # noqa: N802
        record, lower_dirs = self._images.acquire(request.image, request.holder)
        return image_pb2.Rootfs(image_id=record.id, lower_dirs=lower_dirs,
                                image=encode_image(record))

    async def ReleaseRootfs(self, request, context):  # noqa: N802
        self._images.release(request.holder)
        return image_pb2.ReleaseRootfsResponse()

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
