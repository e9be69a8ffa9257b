"""Docker API routes for images: route table plus handlers over gRPC."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from services.gateway.backends import Backends
from services.gateway.convert.image import (
    delete_items_json,
    history_json,
    inspect_json,
    manifests_json,
    summary_json,
)
from services.gateway.convert.progress import progress_to_json
from services.gateway.errors import HTTPError
from services.gateway.params import (
    ApiVersion,
    api_version,
    boolean,
    filters,
    integer,
    json_body,
    platform_param,
)
from services.gateway.registry_auth import auth_from_json, registry_auth
from services.gateway.routing import Route
from services.gateway.streams import json_stream, stream_upload

NAME = "{name:.+}"


def routes(backends: Backends) -> list[Route]:
    handlers = ImageHandlers(backends)
    return [
        Route("GET", "/images/json", handlers.list),
        Route("POST", "/images/load", handlers.load),
        Route("POST", "/images/create", handlers.create),
        Route("POST", "/images/prune", handlers.prune),
        Route("GET", "/images/get", handlers.save),
        Route("GET", "/images/search", handlers.search),
        Route("POST", "/auth", handlers.login),
        Route("GET", f"/distribution/{NAME}/json", handlers.distribution),
        Route("GET", f"/images/{NAME}/history", handlers.history),
        Route("GET", f"/images/{NAME}/get", handlers.save),
        Route("POST", f"/images/{NAME}/push", handlers.push),
        Route("GET", f"/images/{NAME}/json", handlers.inspect),
        Route("POST", f"/images/{NAME}/tag", handlers.tag),
        Route("DELETE", f"/images/{NAME}", handlers.remove),
    ]


def _all_tags(query: Any) -> bool:
    """No tag anywhere means every tag, as dockerd reads /images/create."""
    image = query["fromImage"]
    has_tag = ":" in image.rsplit("/", 1)[-1] or "@" in image
    return not query.get("tag") and not has_tag


class ImageHandlers:
    def __init__(self, backends: Backends) -> None:
        self.image = backends.image
        self.container = backends.container

    async def list(self, request: web.Request) -> web.Response:
        reply = await self.image.List(image_pb2.ListImagesRequest(
            all=boolean(request, "all"), digests=boolean(request, "digests"),
            filters=filters(request), shared_size=boolean(request, "shared-size")))
        version = api_version(request)
        images = [summary_json(i, version) for i in reply.images]
        if version >= (1, 47) and boolean(request, "manifests"):
            users = await self._containers_by_image()
            for summary, image in zip(images, reply.images, strict=True):
                summary["Manifests"] = manifests_json(image, users.get(image.id, []))
        return web.json_response(images)

    async def _containers_by_image(self) -> dict[str, list[str]]:
        reply = await self.container.List(container_pb2.ListContainersRequest(all=True))
        users: dict[str, list[str]] = {}
        for container in reply.containers:
            users.setdefault(container.image_id, []).append(container.id)
        return users

    async def inspect(self, request: web.Request) -> web.Response:
        version = api_version(request)
        manifests = version >= (1, 48) and boolean(request, "manifests")
        platform = (platform_param(request.query.get("platform", ""))
                    if version >= (1, 49) else "")
        if manifests and platform:
            raise HTTPError(400, "conflicting options: manifests and platform options cannot "
                                 "both be set")
        image = await self.image.Inspect(image_pb2.InspectImageRequest(
            name=request.match_info["name"], platform=platform))
        out = inspect_json(image, version)
        if manifests:
            users = await self._containers_by_image()
            out["Manifests"] = manifests_json(image, users.get(image.id, []))
        return web.json_response(out)

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
            running_containers=[c.id for c in running.containers],
            platform=self._one_platform(request, "platforms", (1, 50),
                                        "multiple platforms are not supported")))
        return web.json_response(delete_items_json(reply.items))

    async def load(self, request: web.Request) -> web.StreamResponse:
        options = image_pb2.LoadRequest(options=image_pb2.LoadOptions(
            quiet=boolean(request, "quiet"), platform=self._archive_platform(request)))
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
            platform=self._one_platform(request, "platform", (1, 46),
                                        "multiple platforms is not supported"),
            auth=registry_auth(request.headers.get("X-Registry-Auth", ""))))
        return await json_stream(request, stream, progress_to_json)

    async def login(self, request: web.Request) -> web.Response:
        body = await json_body(request, "registry.AuthConfig")
        reply = await self.image.Login(image_pb2.LoginRequest(auth=auth_from_json(body.data)))
        return web.json_response({"Status": reply.status,
                                  "IdentityToken": reply.identity_token})

    async def search(self, request: web.Request) -> web.Response:
        reply = await self.image.Search(image_pb2.SearchRequest(
            term=request.query.get("term", ""), limit=integer(request, "limit"),
            filters=filters(request),
            auth=registry_auth(request.headers.get("X-Registry-Auth", ""))))
        return web.json_response([
            {"description": r.description, "is_official": r.is_official,
             "is_automated": False, "name": r.name, "star_count": r.star_count}
            for r in reply.results])

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
        platform = (platform_param(request.query.get("platform", ""))
                    if api_version(request) >= (1, 48) else "")
        reply = await self.image.History(
            image_pb2.HistoryRequest(name=request.match_info["name"], platform=platform))
        return web.json_response([history_json(item) for item in reply.items])

    @staticmethod
    def _one_platform(request: web.Request, name: str, since: ApiVersion,
                      several: str) -> str:
        """A platform selector the graphdriver-like store takes once at most."""
        if api_version(request) < since:
            return ""
        given = [platform_param(text) for text in request.query.getall(name, []) if text]
        if len(given) > 1:
            raise HTTPError(400, several)
        return given[0] if given else ""

    @staticmethod
    def _archive_platform(request: web.Request) -> str:
        """save's and load's `platform` (API 1.48+; several only from 1.52)."""
        if api_version(request) < (1, 48):
            return ""
        given = [platform_param(text) for text in request.query.getall("platform", []) if text]
        if len(given) > 1:
            raise HTTPError(400, "multiple platforms not supported for this image store; use "
                                 "a multi-platform image store such as containerd-snapshotter")
        return given[0] if given else ""

    async def prune(self, request: web.Request) -> web.Response:
        reply = await self.image.Prune(image_pb2.PruneImagesRequest(filters=filters(request)))
        return web.json_response({"ImagesDeleted": delete_items_json(reply.deleted) or None,
                                  "SpaceReclaimed": reply.space_reclaimed})

    async def save(self, request: web.Request) -> web.StreamResponse:
        names = ([request.match_info["name"]] if "name" in request.match_info
                 else request.query.getall("names", []))
        stream = self.image.Save(image_pb2.SaveRequest(
            names=names, platform=self._archive_platform(request)))
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
