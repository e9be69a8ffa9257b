"""Docker API routes for the engine itself: ping, version, info, events, df."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from typing import Any

from aiohttp import web

from berth.build.v1 import build_pb2
from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from berth.volume.v1 import volume_pb2
from services.common.errors import BerthError, InvalidArgument
from services.common.events import event_filters
from services.common.version import API_VERSION, MIN_API_VERSION, VERSION
from services.gateway.backends import Backends
from services.gateway.convert.build_cache import cache_record_json
from services.gateway.convert.container_view import summary_json
from services.gateway.convert.event import event_to_json
from services.gateway.convert.image import summary_json as image_summary_json
from services.gateway.convert.volume import volume_to_json
from services.gateway.errors import bad_request
from services.gateway.params import api_version, filters, timestamp
from services.gateway.routing import Route
from services.gateway.streams import cancelled_when_client_leaves

PING_HEADERS = {
    "API-Version": API_VERSION,
    "OSType": "linux",
    "Swarm": "inactive",
    "Docker-Experimental": "false",
    "Builder-Version": "1",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


def routes(backends: Backends) -> list[Route]:
    handlers = SystemHandlers(backends)
    return [
        Route("GET", "/_ping", handlers.ping),
        Route("HEAD", "/_ping", handlers.ping),
        Route("GET", "/version", handlers.version),
        Route("GET", "/info", handlers.info),
        Route("GET", "/events", handlers.events),
        Route("GET", "/system/df", handlers.disk_usage),
    ]


def go_arch(machine: str) -> str:
    """Docker's Arch is GOARCH; hosts report uname's machine."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def registry_config(host: container_pb2.HostInfo) -> dict[str, Any]:
    """/info's RegistryConfig from the engine's settings: insecure CIDRs
    before the loopback ones, insecure names as index configs, mirrors
    with dockerd's trailing slash."""
    cidrs = [str(ipaddress.ip_network(entry, strict=False))
             for entry in host.insecure_registries if "/" in entry]
    names = [entry for entry in host.insecure_registries if "/" not in entry]
    mirrors = [mirror.removesuffix("/") + "/" for mirror in host.registry_mirrors]
    return {
        "AllowNondistributableArtifactsCIDRs": None,
        "AllowNondistributableArtifactsHostnames": None,
        "InsecureRegistryCIDRs": [*cidrs, "127.0.0.0/8", "::1/128"],
        "IndexConfigs": {
            "docker.io": {"Name": "docker.io", "Mirrors": mirrors, "Secure": True,
                          "Official": True},
            **{name: {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
               for name in names}},
        "Mirrors": mirrors,
    }


class SystemHandlers:
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def ping(self, request: web.Request) -> web.Response:
        body = "" if request.method == "HEAD" else "OK"
        return web.Response(text=body, headers=PING_HEADERS, content_type="text/plain")

    async def _host(self) -> container_pb2.HostInfo:
        """Facts about the host, from the container service that owns it."""
        return await self.backends.container.Info(container_pb2.HostInfoRequest())

    async def version(self, request: web.Request) -> web.Response:
        # /version answers while the container service is away, without its host's facts.
        host = container_pb2.HostInfo()
        with contextlib.suppress(BerthError):
            host = await self._host()
        arch = go_arch(host.architecture)
        details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                   "Os": "linux", "Arch": arch, "KernelVersion": host.kernel_version,
                   "GitCommit": "", "Experimental": "false", "BuildTime": ""}
        components = [{"Name": "berth", "Version": VERSION, "Details": details}]
        components += [{"Name": c.name, "Version": c.version, "Details": {"GitCommit": ""}}
                       for c in host.components]
        return web.json_response({
            "Platform": {"Name": "berth"}, "Components": components, "Version": VERSION,
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "",
            "GoVersion": "", "Os": "linux", "Arch": arch,
            "KernelVersion": host.kernel_version, "BuildTime": "",
        })

    async def _counts(self) -> dict[str, int]:
        """Object counts from every service that answers (0 for one that is down)."""
        counts: dict[str, int] = {}

        async def ask(name: str) -> None:
            with contextlib.suppress(BerthError):
                info = await self.backends.info[name].GetServiceInfo(
                    types_pb2.GetServiceInfoRequest(), timeout=2)
                counts.update(info.object_counts)
        await asyncio.gather(*(ask(name) for name in ("container", "image")))
        return counts

    async def info(self, request: web.Request) -> web.Response:
        host = await self._host()
        counts = await self._counts()
        components = {c.name: c.version for c in host.components}
        return web.json_response({
            "ID": host.id,
            "Containers": counts.get("containers", 0),
            "ContainersRunning": counts.get("running", 0),
            "ContainersPaused": counts.get("paused", 0),
            "ContainersStopped": counts.get("stopped", 0),
            "Images": counts.get("images", 0),
            "Driver": host.storage_driver,
            "DriverStatus": [[status.key, status.value] for status in host.driver_status],
            "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"],
                        "Authorization": None, "Log": ["json-file"]},
            "MemoryLimit": True, "SwapLimit": True, "KernelMemoryTCP": False,
            "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True,
            "PidsLimit": True, "IPv4Forwarding": True, "BridgeNfIptables": False,
            "BridgeNfIp6tables": False, "Debug": host.debug, "NFd": 0, "OomKillDisable": True,
            "NGoroutines": 0, "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z",
                                                          time.gmtime()),
            "LoggingDriver": "json-file", "CgroupDriver": host.cgroup_driver,
            "CgroupVersion": host.cgroup_version, "NEventsListener": 0,
            "KernelVersion": host.kernel_version,
            "OperatingSystem": host.operating_system, "OSVersion": host.os_version,
            "OSType": "linux", "Architecture": host.architecture,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": registry_config(host),
            "NCPU": host.ncpu, "MemTotal": host.mem_total,
            "GenericResources": None, "DockerRootDir": host.root_dir,
            "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
            "Name": host.name, "Labels": list(host.labels), "ExperimentalBuild": False,
            "ServerVersion": VERSION,
            "Runtimes": {name: {"path": runtime.path} for name, runtime in host.runtimes.items()},
            "DefaultRuntime": host.default_runtime,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
                      "ControlAvailable": False, "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": host.live_restore, "Isolation": "", "InitBinary": "tini",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": components.get("runc", "")},
            "InitCommit": {"ID": ""},
            "SecurityOptions": list(host.security_options),
            "CDISpecDirs": [], "Containerd": None, "Warnings": [],
        })

    async def events(self, request: web.Request) -> web.StreamResponse:
        now = time.time_ns()
        subscribe = types_pb2.SubscribeRequest(
            since_nano=timestamp(request, "since", now),
            until_nano=timestamp(request, "until", now),
            filters=filters(request))
        try:
            event_filters(subscribe.filters)
        except InvalidArgument as exc:
            raise bad_request(exc.message) from exc
        queue: asyncio.Queue[types_pb2.Event | None] = asyncio.Queue(maxsize=1024)
        clients = [self.backends.image, self.backends.container, self.backends.network,
                   self.backends.volume, self.backends.build]

        async def pump(client: Any) -> None:
            with contextlib.suppress(BerthError):
                async for event in client.Subscribe(subscribe):
                    await queue.put(event)

        tasks = [asyncio.create_task(pump(client)) for client in clients]
        finisher = asyncio.create_task(self._finish_when_done(tasks, queue))
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        try:
            # A client that leaves ends the pumps, so the loop ends even when
            # no event comes.
            with cancelled_when_client_leaves(request, *tasks):
                while (event := await queue.get()) is not None:
                    await response.write(json.dumps(event_to_json(event)).encode() + b"\n")
        finally:
            finisher.cancel()
            for task in tasks:
                task.cancel()
        return response

    @staticmethod
    async def _finish_when_done(tasks: list[asyncio.Task], queue: asyncio.Queue) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        await queue.put(None)

    async def disk_usage(self, request: web.Request) -> web.Response:
        """`docker system df`: each object type from its own service.

        `type=` (API 1.42) limits the answer to some of the four kinds."""
        wanted = set(request.query.getall("type", [])) or {
            "image", "container", "volume", "build-cache"}
        unknown = wanted - {"image", "container", "volume", "build-cache"}
        if unknown:
            raise bad_request(f"unknown object type: {sorted(unknown)[0]}")
        version = api_version(request)
        body: dict[str, Any] = {}
        # Containers are listed for their own rows and for the images' counts;
        # their rw sizes (a walk of each layer) only for their own rows.
        containers: Any = []
        if wanted & {"image", "container"}:
            containers = (await self.backends.container.List(container_pb2.ListContainersRequest(
                all=True, size="container" in wanted))).containers
        if "image" in wanted:
            body["LayersSize"] = (await self._counts()).get("layer_bytes", 0)
            listed = await self.backends.image.List(
                image_pb2.ListImagesRequest(all=True, shared_size=True))
            body["Images"] = [self._image_usage(image, containers, version)
                              for image in listed.images]
        if "container" in wanted:
            body["Containers"] = [summary_json(c, version, size=True) for c in containers]
        if "volume" in wanted:
            # Every volume with its size and lease count.
            volumes = await self.backends.volume.List(volume_pb2.ListVolumesRequest(usage=True))
            body["Volumes"] = [volume_to_json(v, usage=True) for v in volumes.volumes]
        if "build-cache" in wanted:
            cache = await self.backends.build.DiskUsage(build_pb2.BuildDiskUsageRequest())
            body["BuildCache"] = [cache_record_json(r) for r in cache.records]
        return web.json_response(body)

    @staticmethod
    def _image_usage(image: image_pb2.Image, containers: Any, version: Any) -> dict[str, Any]:
        out = image_summary_json(image, version)
        out["Containers"] = sum(1 for c in containers if c.image_id == image.id)
        out["SharedSize"] = image.shared_size
        return out
