"""Docker API routes for images: route table plus handlers over gRPC."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from datetime import datetime
from typing import Any

from aiohttp import web

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.gateway.backends import Backends, Stream
from services.gateway.convert.container_view import ApiVersion, api_version
from services.gateway.errors import HTTPError
from services.gateway.params import boolean, filters, json_body
from services.gateway.routing import Route
from services.gateway.streams import body_chunks, json_stream, progress_to_json
from services.image.codec import config_to_json

NAME = "{name:.+}"


def routes(backends: Backends) -> list[Route]:
    handlers = ImageHandlers(backends)
    return [
        Route("GET", "/images/json", handlers.list),
        Route("POST", "/images/load", handlers.load),
        Route("POST", "/images/create", handlers.create),
        Route("POST", "/images/prune", handlers.prune),
        Route("GET", "/images/get", handlers.save),
        Route("POST", "/auth", handlers.login),
        Route("GET", f"/distribution/{NAME}/json", handlers.distribution),
        Route("GET", f"/images/{NAME}/history", handlers.history),
        Route("GET", f"/images/{NAME}/get", handlers.save),
        Route("POST", f"/images/{NAME}/push", handlers.push),
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
        "Containers": -1, "Created": created_unix(image.created),
        "Id": image.id, "Labels": dict(image.labels) or None, "ParentId": image.parent,
        "RepoDigests": list(image.repo_digests), "RepoTags": list(image.repo_tags),
        "SharedSize": image.shared_size, "Size": image.size,
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


def _all_tags(query: Any) -> bool:
    """No tag anywhere means every tag, as dockerd reads /images/create."""
    image = query["fromImage"]
    has_tag = ":" in image.rsplit("/", 1)[-1] or "@" in image
    return not query.get("tag") and not has_tag


def registry_auth(header: str) -> types_pb2.RegistryAuth:
    """Decode X-Registry-Auth (base64url JSON, padding optional)."""
    if not header:
        return types_pb2.RegistryAuth()
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return types_pb2.RegistryAuth()
    if not isinstance(decoded, dict):
        return types_pb2.RegistryAuth()
    return auth_from_json(decoded)


def auth_from_json(data: dict[str, Any]) -> types_pb2.RegistryAuth:
    lowered = {key.lower(): value for key, value in data.items() if isinstance(value, str)}
    return types_pb2.RegistryAuth(
        username=lowered.get("username", ""), password=lowered.get("password", ""),
        server_address=lowered.get("serveraddress", ""),
        identity_token=lowered.get("identitytoken", ""),
        registry_token=lowered.get("registrytoken", ""), email=lowered.get("email", ""))


def history_json(item: image_pb2.HistoryItem) -> dict[str, Any]:
    return {"Id": item.id, "Created": item.created, "CreatedBy": item.created_by,
            "Tags": list(item.tags) or None, "Size": item.size, "Comment": item.comment}


def delete_items_json(items: Any) -> list[dict[str, str]]:
    return [{"Untagged": i.untagged} if i.untagged else {"Deleted": i.deleted} for i in items]


async def pump_body(request: web.Request, stream: Stream, wrap: Any) -> None:
    """Send the request body to a client-streaming call, then half-close it."""
    async for chunk in body_chunks(request):
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
        self.container = backends.container

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
        running = await self.container.List(container_pb2.ListContainersRequest())
        reply = await self.image.Remove(image_pb2.RemoveImageRequest(
            name=request.match_info["name"], force=boolean(request, "force"),
            no_prune=boolean(request, "noprune"),
            running_containers=[c.id for c in running.containers]))
        return web.json_response(delete_items_json(reply.items))

    async def load(self, request: web.Request) -> web.StreamResponse:
        options = image_pb2.LoadRequest(
            options=image_pb2.LoadOptions(quiet=boolean(request, "quiet")))
        return await stream_upload(request, self.image.Load(), options,
                                   lambda chunk: image_pb2.LoadRequest(data=chunk))

    async def create(self, request: web.Request) -> web.StreamResponse:
        """Pull (fromImage) or import (fromSrc)."""
        query = request.query
        if query.get("fromSrc"):
            options = image_pb2.ImportOptions(
                repo=query.get("repo", ""), tag=query.get("tag", ""),
                changes=query.getall("changes", []), message=query.get("message", ""),
                platform=query.get("platform", ""), source_url=query["fromSrc"])
            return await stream_upload(
                request, self.image.Import(), image_pb2.ImportRequest(options=options),
                lambda chunk: image_pb2.ImportRequest(data=chunk))
        if not query.get("fromImage"):
            raise HTTPError(400, "either fromImage or fromSrc is required")
        stream = self.image.Pull(image_pb2.PullRequest(
            reference=query["fromImage"], tag=query.get("tag", ""),
            platform=query.get("platform", ""), all_tags=_all_tags(query),
            auth=registry_auth(request.headers.get("X-Registry-Auth", ""))))
        return await json_stream(request, stream, progress_to_json)

    async def push(self, request: web.Request) -> web.StreamResponse:
        stream = self.image.Push(image_pb2.PushRequest(
            name=request.match_info["name"], tag=request.query.get("tag", ""),
            auth=registry_auth(request.headers.get("X-Registry-Auth", ""))))
        return await json_stream(request, stream, progress_to_json)

    async def login(self, request: web.Request) -> web.Response:
        body = await json_body(request, "registry.AuthConfig")
        reply = await self.image.Login(image_pb2.LoginRequest(auth=auth_from_json(body.data)))
        return web.json_response({"Status": reply.status,
                                  "IdentityToken": reply.identity_token})

    async def distribution(self, request: web.Request) -> web.Response:
        reply = await self.image.DistributionInspect(image_pb2.DistributionInspectRequest(
            name=request.match_info["name"],
            auth=registry_auth(request.headers.get("X-Registry-Auth", ""))))
        return web.json_response({
            "Descriptor": {"mediaType": reply.media_type, "digest": reply.digest,
                           "size": reply.size},
            "Platforms": [{"architecture": p.architecture, "os": p.os,
                           **({"variant": p.variant} if p.variant else {})}
                          for p in reply.platforms]})

    async def history(self, request: web.Request) -> web.Response:
        reply = await self.image.History(
            image_pb2.HistoryRequest(name=request.match_info["name"]))
        return web.json_response([history_json(item) for item in reply.items])

    async def prune(self, request: web.Request) -> web.Response:
        reply = await self.image.Prune(image_pb2.PruneImagesRequest(filters=filters(request)))
        return web.json_response({"ImagesDeleted": delete_items_json(reply.deleted) or None,
                                  "SpaceReclaimed": reply.space_reclaimed})

    async def save(self, request: web.Request) -> web.StreamResponse:
        names = ([request.match_info["name"]] if "name" in request.match_info
                 else request.query.getall("names", []))
        stream = self.image.Save(image_pb2.SaveRequest(names=names))
        iterator = aiter(stream)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            first = None
        response = web.StreamResponse()
        response.content_type = "application/x-tar"
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(first.data)
            async for chunk in iterator:
                await response.write(chunk.data)
        finally:
            stream.cancel()
        await response.write_eof()
        return response
