"""Docker API routes for volumes: route table plus handlers over gRPC."""

from __future__ import annotations

from aiohttp import web

from berth.volume.v1 import volume_pb2
from services.gateway.backends import Backends
from services.gateway.convert.volume import volume_to_json
from services.gateway.params import api_version, boolean, filters, json_body
from services.gateway.routing import Route

# Before API 1.42 a prune removed every unused volume, named ones too.
PRUNE_ALL_BEFORE = (1, 42)


def routes(backends: Backends) -> list[Route]:
    handlers = VolumeHandlers(backends)
    return [
        Route("GET", "/volumes", handlers.list),
        Route("POST", "/volumes/create", handlers.create),
        Route("POST", "/volumes/prune", handlers.prune),
        Route("GET", "/volumes/{name}", handlers.inspect),
        Route("DELETE", "/volumes/{name}", handlers.remove),
    ]


class VolumeHandlers:
    def __init__(self, backends: Backends) -> None:
        self.volumes = backends.volume

    async def list(self, request: web.Request) -> web.Response:
        reply = await self.volumes.List(volume_pb2.ListVolumesRequest(filters=filters(request)))
        return web.json_response({"Volumes": [volume_to_json(v) for v in reply.volumes],
                                  "Warnings": list(reply.warnings)})

    async def create(self, request: web.Request) -> web.Response:
        body = await json_body(request, "volume.CreateOptions")
        volume = await self.volumes.Create(volume_pb2.CreateVolumeRequest(
            name=body.string("Name"), driver=body.string("Driver"),
            driver_opts=body.string_map("DriverOpts"), labels=body.string_map("Labels")))
        return web.json_response(volume_to_json(volume), status=201)

    async def inspect(self, request: web.Request) -> web.Response:
        volume = await self.volumes.Inspect(
            volume_pb2.InspectVolumeRequest(name=request.match_info["name"]))
        return web.json_response(volume_to_json(volume))

    async def remove(self, request: web.Request) -> web.Response:
        await self.volumes.Remove(volume_pb2.RemoveVolumeRequest(
            name=request.match_info["name"], force=boolean(request, "force")))
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.Response:
        prune_filters = filters(request)
        if api_version(request) < PRUNE_ALL_BEFORE:
            prune_filters.filters["all"].values[:] = ["true"]
        reply = await self.volumes.Prune(volume_pb2.PruneVolumesRequest(filters=prune_filters))
        return web.json_response({"VolumesDeleted": list(reply.deleted),
                                  "SpaceReclaimed": reply.space_reclaimed})
