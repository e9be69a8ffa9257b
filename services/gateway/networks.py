"""Docker API routes for networks: route table plus handlers over gRPC."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from services.common.errors import NotFound
from services.gateway.backends import Backends
from services.gateway.errors import bad_request, read_json
from services.gateway.params import filters
from services.gateway.routing import Route


def routes(backends: Backends) -> list[Route]:
    handlers = NetworkHandlers(backends)
    return [
        Route("GET", "/networks", handlers.list),
        Route("POST", "/networks/create", handlers.create),
        Route("POST", "/networks/prune", handlers.prune),
        Route("GET", "/networks/{id}", handlers.inspect),
        Route("DELETE", "/networks/{id}", handlers.remove),
        Route("POST", "/networks/{id}/connect", handlers.connect),
        Route("POST", "/networks/{id}/disconnect", handlers.disconnect),
    ]


def network_to_json(network: network_pb2.Network, with_containers: bool) -> dict[str, Any]:
    """Docker's Network object (inspect and list shapes)."""
    containers = {}
    if with_containers:
        containers = {
            cid: {"Name": c.name, "EndpointID": c.endpoint_id, "MacAddress": c.mac_address,
                  "IPv4Address": c.ipv4_address, "IPv6Address": c.ipv6_address}
            for cid, c in network.containers.items()}
    config = []
    for c in network.ipam.config:
        entry: dict[str, Any] = {"Subnet": c.subnet, "Gateway": c.gateway}
        if c.ip_range:
            entry["IPRange"] = c.ip_range
        if c.aux_addresses:
            entry["AuxiliaryAddresses"] = dict(c.aux_addresses)
        config.append(entry)
    return {
        "Name": network.name, "Id": network.id, "Created": network.created,
        "Scope": network.scope or "local", "Driver": network.driver,
        "EnableIPv4": True, "EnableIPv6": network.enable_ipv6,
        "IPAM": {"Driver": network.ipam.driver or "default",
                 "Options": dict(network.ipam.options) or None, "Config": config},
        "Internal": network.internal, "Attachable": network.attachable,
        "Ingress": network.ingress, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": containers, "Options": dict(network.options),
        "Labels": dict(network.labels),
    }


def _string_map(body: dict, key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict):
        raise bad_request(f"invalid {key}: expected an object")
    return {str(k): str(v) for k, v in value.items()}


def _ipam(body: dict) -> network_pb2.IPAM:
    raw = body.get("IPAM") or {}
    if not isinstance(raw, dict):
        raise bad_request("invalid IPAM: expected an object")
    ipam = network_pb2.IPAM(driver=raw.get("Driver") or "default",
                            options=_string_map(raw, "Options"))
    for entry in raw.get("Config") or []:
        ipam.config.append(network_pb2.IPAMConfig(
            subnet=entry.get("Subnet") or "", ip_range=entry.get("IPRange") or "",
            gateway=entry.get("Gateway") or "",
            aux_addresses=_string_map(entry, "AuxiliaryAddresses")))
    return ipam


def _endpoint_request(network: str, config: dict) -> network_pb2.EndpointRequest:
    ipam = config.get("IPAMConfig") or {}
    return network_pb2.EndpointRequest(
        network=network, ipv4_address=ipam.get("IPv4Address") or "",
        ipv6_address=ipam.get("IPv6Address") or "",
        aliases=config.get("Aliases") or [], links=config.get("Links") or [],
        mac_address=config.get("MacAddress") or "",
        driver_opts=_string_map(config, "DriverOpts"))


class NetworkHandlers:
    def __init__(self, backends: Backends) -> None:
        self.networks = backends.network
        self.containers = backends.container

    async def list(self, request: web.Request) -> web.Response:
        reply = await self.networks.List(
            network_pb2.ListNetworksRequest(filters=filters(request)))
        return web.json_response([network_to_json(n, False) for n in reply.networks])

    async def inspect(self, request: web.Request) -> web.Response:
        network = await self.networks.Inspect(
            network_pb2.InspectNetworkRequest(id=request.match_info["id"]))
        return web.json_response(network_to_json(network, True))

    async def create(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        name = body.get("Name")
        if not name or not isinstance(name, str):
            raise bad_request("network name is required")
        reply = await self.networks.Create(network_pb2.CreateNetworkRequest(
            name=name, driver=body.get("Driver") or "bridge",
            internal=bool(body.get("Internal")), attachable=bool(body.get("Attachable")),
            ingress=bool(body.get("Ingress")), enable_ipv6=bool(body.get("EnableIPv6")),
            ipam=_ipam(body), options=_string_map(body, "Options"),
            labels=_string_map(body, "Labels"),
            check_duplicate=bool(body.get("CheckDuplicate", True))))
        return web.json_response({"Id": reply.id, "Warning": reply.warning}, status=201)

    async def remove(self, request: web.Request) -> web.Response:
        await self.networks.Remove(network_pb2.RemoveNetworkRequest(id=request.match_info["id"]))
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.Response:
        reply = await self.networks.Prune(
            network_pb2.PruneNetworksRequest(filters=filters(request)))
        return web.json_response({"NetworksDeleted": list(reply.deleted)})

    async def _container(self, ref: Any) -> container_pb2.ContainerInspect:
        if not ref or not isinstance(ref, str):
            raise bad_request("container is required")
        return await self.containers.Inspect(container_pb2.InspectContainerRequest(id=ref))

    async def connect(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        network = await self.networks.Inspect(
            network_pb2.InspectNetworkRequest(id=request.match_info["id"]))
        container = await self._container(body.get("Container"))
        config = body.get("EndpointConfig") or {}
        if not isinstance(config, dict):
            raise bad_request("invalid EndpointConfig: expected an object")
        await self.networks.Connect(network_pb2.ConnectRequest(
            container_id=container.id, container_name=container.name.lstrip("/"),
            endpoint=_endpoint_request(network.id, config)))
        return web.Response(status=200)

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        network = await self.networks.Inspect(
            network_pb2.InspectNetworkRequest(id=request.match_info["id"]))
        force = bool(body.get("Force"))
        try:
            container_id = (await self._container(body.get("Container"))).id
        except NotFound:
            # A forced disconnect also clears the endpoint of a container gone for good.
            if not force:
                raise
            container_id = body["Container"]
        await self.networks.Disconnect(network_pb2.DisconnectRequest(
            container_id=container_id, network=network.id, force=force))
        return web.Response(status=200)
