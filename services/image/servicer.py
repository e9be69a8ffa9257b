"""gRPC servicer of the image service: decode, call the domain, encode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.types.v1 import types_pb2
from services.common.errors import Internal, InvalidArgument
from services.common.events import EventBus
from services.common.filters import Filters
from services.common.image_config import config_from_json, config_to_json
from services.image import cache_from, export, platforms, reference, search
from services.image.authoring import EMPTY_TAR, NewImage, apply_changes, create_image
from services.image.distribution import Distribution, credentials_of
from services.image.images import ImageRecord, Images
from services.image.ingest import Ingest
from services.image.progress import Message
from services.image.removal import DeleteItem, Removal
from services.image.thread_pipe import ChunkPipe


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
        containers=record.containers, holds=record.holds, shared_size=record.shared_size)


def encode_items(items: list[DeleteItem]) -> list[image_pb2.DeleteItem]:
    return [image_pb2.DeleteItem(untagged=i.untagged, deleted=i.deleted) for i in items]


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


def _size(value: float) -> str:
    """Docker's HumanSize: decimal units, four significant digits."""
    units = ["B", "kB", "MB", "GB", "TB"]
    while value >= 1000 and len(units) > 1:
        value /= 1000
        units.pop(0)
    return f"{value:.4g}{units[0]}"


def progress_bar(current: int, total: int) -> str:
    """Docker's rendered bar: `[=====>     ]  1.5MB/3MB`."""
    if total <= 0:
        return f"{_size(current)}"
    width = 50
    filled = min(width, int(width * current / total))
    bar = "=" * max(filled - 1, 0) + (">" if filled else "") + " " * (width - filled)
    return f"[{bar}] {_size(current)}/{_size(total)}"


def encode_message(message: Message) -> types_pb2.Progress:
    progress = types_pb2.Progress(status=message.status, id=message.id, stream=message.stream,
                                  current=message.current, total=message.total)
    if message.total:
        progress.progress = progress_bar(message.current, message.total)
    if message.aux:
        progress.aux.CopyFrom(types_pb2.Aux(tag=message.aux["Tag"],
                                            digest=message.aux["Digest"],
                                            size=message.aux["Size"]))
    return progress


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: Images, removal: Removal, ingest: Ingest, events: EventBus,
                 distribution: Distribution) -> None:
        self._images = images
        self._removal = removal
        self._ingest = ingest
        self._events = events
        self._distribution = distribution

    async def Pull(self, request, context):  # noqa: N802
        async for message in self._distribution.pull(
                request.reference, request.tag, request.platform,
                credentials_of(request.auth), all_tags=request.all_tags):
            yield encode_message(message)

    async def Push(self, request, context):  # noqa: N802
        self._require_platform(f"{request.name}:{request.tag}" if request.tag else request.name,
                               request.platform)
        async for message in self._distribution.push(request.name, request.tag,
                                                     credentials_of(request.auth)):
            yield encode_message(message)

    async def Login(self, request, context):  # noqa: N802
        status, identity_token = await self._distribution.login(
            request.auth.server_address, credentials_of(request.auth))
        return image_pb2.LoginResponse(status=status, identity_token=identity_token)

    async def DistributionInspect(self, request, context):  # noqa: N802
        manifest = await self._distribution.inspect(request.name, credentials_of(request.auth))
        platforms = [image_pb2.Platform(architecture=p.get("architecture", ""),
                                        os=p.get("os", ""), variant=p.get("variant", ""),
                                        os_version=p.get("os.version", ""))
                     for p in manifest.platforms]
        return image_pb2.DistributionInspectResponse(
            media_type=manifest.media_type, digest=manifest.digest, size=manifest.size,
            platforms=platforms)

    async def Search(self, request, context):  # noqa: N802
        results = await search.search(self._distribution.registries, request.term,
                                      request.limit, Filters.from_message(request.filters),
                                      credentials_of(request.auth))
        return image_pb2.SearchResponse(results=[
            image_pb2.SearchResult(name=r.name, description=r.description,
                                   star_count=r.star_count, is_official=r.is_official)
            for r in results])

    async def List(self, request, context):  # noqa: N802
        records = self._images.list(Filters.from_message(request.filters), show_all=request.all,
                                    shared_size=request.shared_size)
        return image_pb2.ListImagesResponse(images=[encode_image(r) for r in records])

    async def Inspect(self, request, context):  # noqa: N802
        self._require_platform(request.name, request.platform)
        return encode_image(self._images.inspect(request.name))

    def _require_platform(self, name: str, platform: str) -> None:
        if platform:
            platforms.require(name, self._images.config(self._images.resolve(name)), platform)

    async def Tag(self, request, context):  # noqa: N802
        self._images.tag(request.source,
                         reference.parse_repository(request.repo, request.tag))
        return image_pb2.TagResponse()

    async def Remove(self, request, context):  # noqa: N802
        self._require_platform(request.name, request.platform)
        items = self._removal.remove(request.name, request.force, not request.no_prune,
                                    set(request.running_containers))
        return image_pb2.RemoveImageResponse(items=encode_items(items))

    async def Load(self, request_iterator, context):  # noqa: N802
        path = self._images.content.temp_path(".tar")
        try:
            options = await spool(request_iterator, path, "options") or image_pb2.LoadOptions()
            if path.stat().st_size == 0:
                raise InvalidArgument("no images found in the archive")
            async for message in self._ingest.load(path, options.quiet, options.platform):
                yield encode_message(message)
        finally:
            path.unlink(missing_ok=True)

    async def History(self, request, context):  # noqa: N802
        self._require_platform(request.name, request.platform)
        items = [image_pb2.HistoryItem(id=e.id, created=int(e.created), created_by=e.created_by,
                                       tags=e.tags, size=e.size, comment=e.comment)
                 for e in self._images.history(request.name)]
        return image_pb2.HistoryResponse(items=items)

    async def Prune(self, request, context):  # noqa: N802
        items, reclaimed = self._removal.prune(Filters.from_message(request.filters))
        return image_pb2.PruneImagesResponse(deleted=encode_items(items),
                                             space_reclaimed=reclaimed)

    async def Save(self, request, context):  # noqa: N802
        items = export.plan(self._images, list(request.names))
        if request.platform:
            wanted = platforms.Platform.parse(request.platform)
            if not all(platforms.matches(wanted, self._images.config(i.image_id))
                       for i in items):
                raise Internal(f"no suitable export target found for platform {wanted}")
        with self._images.pinned(*(i.image_id for i in items)):
            pipe = ChunkPipe(asyncio.get_running_loop())
            async for chunk in pipe.run(export.Exporter(self._images).write_to(items)):
                yield types_pb2.Chunk(data=chunk)
        for item in items:
            self._events.publish("save", item.image_id, {"name": item.image_id})

    async def Import(self, request_iterator, context):  # noqa: N802
        raw = self._images.content.temp_path(".import")
        try:
            options = await spool(request_iterator, raw, "options") or image_pb2.ImportOptions()
            tags = [reference.parse_repository(options.repo, options.tag)] if options.repo else []
            if options.source_url not in ("", "-"):
                await self._distribution.download(options.source_url, raw)
            digest = await asyncio.to_thread(self._ingest.store_tar, raw)
        finally:
            raw.unlink(missing_ok=True)
        os_name, _, arch = (options.platform or "linux/amd64").partition("/")
        try:
            spec = NewImage(
                config=apply_changes({}, list(options.changes)), tags=tags, os=os_name,
                architecture=arch.split("/")[0],
                comment=options.message or f"Imported from {options.source_url or '-'}")
            image_id = await create_image(self._ingest, spec, digest)
        finally:
            self._images.unpin(digest)
        self._events.publish("import", image_id, {"name": image_id})
        yield types_pb2.Progress(status=image_id)

    async def CommitLayer(self, request_iterator, context):  # noqa: N802
        options = image_pb2.CommitLayerOptions()
        with self._images.content.writer() as blob:
            async for message in request_iterator:
                if message.WhichOneof("part") == "options":
                    options = message.options
                elif message.data:
                    await asyncio.to_thread(blob.write, message.data)
            if blob.size == 0:
                blob.write(EMPTY_TAR)
        spec = NewImage(
            config=config_to_json(options.config), parent=options.parent,
            created_by=options.created_by, comment=options.comment, author=options.author,
            empty_layer=options.empty_layer, container=options.container_id,
            container_config=(config_to_json(options.container_config)
                              if options.HasField("container_config") else None),
            architecture=options.architecture, os=options.os,
            tags=[reference.parse(t) for t in options.tags],
            holder=options.hold.holder, holder_owner=options.hold.owner)
        return image_pb2.CommitLayerResponse(id=await create_image(self._ingest, spec,
                                                                   blob.digest))

    async def CacheFrom(self, request, context):  # noqa: N802
        sources = cache_from.resolve_sources(self._images, list(request.sources))
        hold = request.hold
        if request.local_hit and cache_from.is_ancestor(self._images, request.local_hit,
                                                        sources):
            self._images.hold(request.local_hit, hold.holder, hold.owner)
            return image_pb2.CacheFromResponse(id=request.local_hit)
        hit = cache_from.find(self._images, self._ingest, request.parent, sources,
                              request.created_by, config_to_json(request.config))
        if hit is None:
            return image_pb2.CacheFromResponse()
        self._images.hold(hit.image_id, hold.holder, hold.owner)
        return image_pb2.CacheFromResponse(id=hit.image_id, source=hit.source_id)

    async def AcquireRootfs(self, request, context):  # noqa: N802
        record, lower_dirs = self._images.acquire(request.image, request.holder, request.owner)
        return image_pb2.Rootfs(image_id=record.id, lower_dirs=lower_dirs,
                                image=encode_image(record))

    async def ReleaseRootfs(self, request, context):  # noqa: N802
        self._removal.release(request.holder)
        return image_pb2.ReleaseRootfsResponse()

    async def ReleaseGoneRootfs(self, request, context):  # noqa: N802
        gone = self._removal.release_gone(request.owner, set(request.holders),
                                          request.before_nano)
        return image_pb2.ReleaseGoneRootfsResponse(holders=gone)

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
