"""Docker API routes for builds: route table plus handlers over gRPC."""

from __future__ import annotations

from aiohttp import web

from berth.build.v1 import build_pb2
from services.gateway.backends import Backends
from services.gateway.convert.container_create import client_network_mode
from services.gateway.errors import bad_request
from services.gateway.params import boolean, filters, integer, query_json
from services.gateway.registry_auth import registry_config
from services.gateway.routing import Route
from services.gateway.streams import cancelled_when_client_leaves, stream_upload


def routes(backends: Backends) -> list[Route]:
    handlers = BuildHandlers(backends)
    return [
        Route("POST", "/build", handlers.build),
        Route("POST", "/build/prune", handlers.prune),
    ]


def _json_map(request: web.Request, name: str) -> dict[str, str]:
    """A JSON object parameter (buildargs, labels); null values are dropped."""
    decoded = query_json(request, name) or {}
    if not isinstance(decoded, dict):
        raise bad_request(f"error reading {name}: expected a JSON object")
    return {str(k): str(v) for k, v in decoded.items() if v is not None}


def _json_list(request: web.Request, name: str) -> list[str]:
    decoded = query_json(request, name)
    return [str(v) for v in decoded] if isinstance(decoded, list) else []


def build_options(request: web.Request) -> build_pb2.BuildOptions:
    """Docker's POST /build query parameters as BuildOptions."""
    query = request.query
    if query.get("remote"):
        raise bad_request("remote build contexts are not supported: send the context "
                          "as the request body")
    if boolean(request, "squash"):
        raise bad_request("squash is only supported with experimental mode")
    if query.get("version") == "2":
        raise bad_request("BuildKit is not supported by this engine: use the legacy builder "
                          "(DOCKER_BUILDKIT=0)")
    return build_pb2.BuildOptions(
        dockerfile=query.get("dockerfile", ""), tags=query.getall("t", []),
        build_args=_json_map(request, "buildargs"), labels=_json_map(request, "labels"),
        target=query.get("target", ""), no_cache=boolean(request, "nocache"),
        pull=boolean(request, "pull"), remove=boolean(request, "rm", True),
        force_remove=boolean(request, "forcerm"), quiet=boolean(request, "q"),
        network_mode=client_network_mode(query.get("networkmode", "")),
        extra_hosts=[h for value in query.getall("extrahosts", []) for h in value.split(",")
                     if h],
        shm_size=integer(request, "shmsize"), memory=integer(request, "memory"),
        memory_swap=integer(request, "memswap"), cpu_shares=integer(request, "cpushares"),
        cpu_period=integer(request, "cpuperiod"), cpu_quota=integer(request, "cpuquota"),
        cpuset_cpus=query.get("cpusetcpus", ""), platform=query.get("platform", ""),
        cache_from=_json_list(request, "cachefrom"),
        auth_configs=registry_config(request.headers.get("X-Registry-Config", "")))


class BuildHandlers:
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def build(self, request: web.Request) -> web.StreamResponse:
        options = build_options(request)
        # A build can be silent for long (a RUN step that sleeps): the stream
        # notices the client going away, so the build stops and its step
        # container goes.
        stream = self.backends.build.Build()
        with cancelled_when_client_leaves(request, stream):
            return await stream_upload(request, stream, build_pb2.BuildRequest(options=options),
                                       lambda chunk: build_pb2.BuildRequest(context=chunk))

    async def prune(self, request: web.Request) -> web.Response:
        keep = integer(request, "keep-storage") or integer(request, "reserved-space")
        reply = await self.backends.build.Prune(build_pb2.PruneBuildCacheRequest(
            all=boolean(request, "all"), keep_storage=keep, filters=filters(request)))
        return web.json_response({"CachesDeleted": list(reply.caches_deleted),
                                  "SpaceReclaimed": reply.space_reclaimed})
