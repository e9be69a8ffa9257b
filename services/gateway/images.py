"""Docker API routes for images: route table plus handlers over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from aiohttp import web

from berth.image.v1 import image_pb2
from services.gateway.backends import Backends, Stream
from services.gateway.convert.container_view import ApiVersion, api_version
from services.gateway.params import boolean, filters
from services.gateway.routing import Route
from services.gateway.streams import json_stream, progress_to_json
from services.image.codec import config_to_json

BODY_CHUNK = 1 << 20
NAME = "{name:.+}"


def routes(backends: Backends) -> list[Route]:
    handlers = ImageHandlers(backends)
    return [
        Route("GET", "/images/json", handlers.list),
        Route("POST", "/images/load", handlers.load),
        Route("GET", f"/images/{NAME}/json", handlers.inspect),
        Route("POST", f"/images/{NAME}/tag", handlers.tag),
        Route("DELETE", f"/images/{NAME}", handlers.remove),
    ]


def _version(request: web.Request) -> ApiVersion:
    return api_version(request.match_info.get("version"))


def created_unix(created: str) -> int:
    if not created:
        return 0
    main = created.split(".")[0].rstrip("Z")
    with contextlib.suppress(ValueError):
        return int(datetime.fromisoformat(main + "+00:00").timestamp())
    return 0


def summary_json(image: image_pb2.Image, version: ApiVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Containers": image.containers, "Created": created_unix(image.created),
        "Id": image.id, "Labels": dict(image.labels), "ParentId": image.parent,
        "RepoDigests": list(image.repo_digests), "RepoTags": list(image.repo_tags),
        "SharedSize": -1, "Size": image.size,
    }
    if version < (1, 44):
        out["VirtualSize"] = image.size
    return out


def inspect_json(image: image_pb2.Image, version: ApiVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Id": image.id, "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests), "Parent": image.parent,
        "Comment": image.comment, "Created": image.created,
        "DockerVersion": image.docker_version, "Author": image.author,
        "Config": config_to_json(image.config), "Architecture": image.architecture,
        "Os": image.os, "Size": image.size,
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": list(image.layers)},
        "Metadata": {"LastTagTime": image.last_tag_time or "0001-01-01T00:00:00Z"},
    }
    if image.variant:
        out["Variant"] = image.variant
    if version < (1, 44):
        out["VirtualSize"] = image.size
    if version < (1, 45):
        out["Container"] = ""
        out["ContainerConfig"] = config_to_json(image_pb2.ImageConfig())
    return out


def delete_items_json(items: Any) -> list[dict[str, str]]:
    return [{"Untagged": i.untagged} if i.untagged else {"Deleted": i.deleted} for i in items]


async def pump_body(request: web.Request, stream: Stream, wrap: Any) -> None:
    """Send the request body to a client-streaming call, then half-close it."""
    async for chunk in request.content.iter_chunked(BODY_CHUNK):
        await stream.write(wrap(chunk))
    await stream.done_writing()


async def stream_upload(request: web.Request, stream: Stream, options: Any,
                        wrap: Any) -> web.StreamResponse:
    """Upload the body to `stream` while relaying its progress as JSON lines."""
    await stream.write(options)
    pump = asyncio.create_task(pump_body(request, stream, wrap))
    try:
        return await json_stream(request, stream, progress_to_json)
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await pump


class ImageHandlers:
    def __init__(self, backends: Backends) -> None:
        self.image = backends.image

    async def list(self, request: web.Request) -> web.Response:
        reply = await self.image.List(image_pb2.ListImagesRequest(
            all=boolean(request, "all"), digests=boolean(request, "digests"),
            filters=filters(request), shared_size=boolean(request, "shared-size")))
        version = _version(request)
        return web.json_response([summary_json(i, version) for i in reply.images])

    async def inspect(self, request: web.Request) -> web.Response:
        image = await self.image.Inspect(
            image_pb2.InspectImageRequest(name=request.match_info["name"]))
        return web.json_response(inspect_json(image, _version(request)))

    async def tag(self, request: web.Request) -> web.Response:
        await self.image.Tag(image_pb2.TagRequest(
            source=request.match_info["name"], repo=request.query.get("repo", ""),
            tag=request.query.get("tag", "")))
        return web.Response(status=201)

    async def remove(self, request: web.Request) -> web.Response:
        reply = await self.image.Remove(image_pb2.RemoveImageRequest(
            name=request.match_info["name"], force=boolean(request, "force"),
            no_prune=boolean(request, "noprune")))
        return web.json_response(delete_items_json(reply.items))

    async def load(self, request: web.Request) -> web.StreamResponse:
        options = image_pb2.LoadRequest(
            options=image_pb2.LoadOptions(quiet=boolean(request, "quiet")))
        return await stream_upload(request, self.image.Load(), options,
                                   lambda chunk: image_pb2.LoadRequest(data=chunk))
