"""Docker API routes for networks: route table plus handlers over gRPC."""

from __future__ import annotations

from aiohttp import web

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from services.common.errors import NotFound
from services.gateway.backends import Backends
from services.gateway.convert.network import endpoint_request, ipam_request, network_to_json
from services.gateway.errors import bad_request
from services.gateway.params import filters, json_body
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
        body = await json_body(request, "network.CreateRequest")
        create = network_pb2.CreateNetworkRequest(
            name=body.string("Name"), driver=body.string("Driver") or "bridge",
            internal=body.boolean("Internal"), attachable=body.boolean("Attachable"),
            ingress=body.boolean("Ingress"), enable_ipv6=body.boolean("EnableIPv6"),
            ipam=ipam_request(body.object("IPAM", "network.IPAM")),
            options=body.string_map("Options"), labels=body.string_map("Labels"),
            scope=body.string("Scope"),
            config_only=body.boolean("ConfigOnly"),
            config_from=body.object("ConfigFrom", "network.ConfigReference").string("Network"))
        if body.has("EnableIPv4"):
            create.enable_ipv4 = body.boolean("EnableIPv4")
        reply = await self.networks.Create(create)
        return web.json_response({"Id": reply.id, "Warning": reply.warning}, status=201)

    async def remove(self, request: web.Request) -> web.Response:
        await self.networks.Remove(network_pb2.RemoveNetworkRequest(id=request.match_info["id"]))
        return web.Response(status=204)

    async def prune(self, request: web.Request) -> web.Response:
        reply = await self.networks.Prune(
            network_pb2.PruneNetworksRequest(filters=filters(request)))
        return web.json_response({"NetworksDeleted": list(reply.deleted)})

    async def _container(self, ref: str) -> container_pb2.ContainerInspect:
        if not ref:
            raise bad_request("container is required")
        return await self.containers.Inspect(container_pb2.InspectContainerRequest(id=ref))

    async def connect(self, request: web.Request) -> web.Response:
        body = await json_body(request, "network.ConnectOptions")
        config = body.object("EndpointConfig", "network.EndpointSettings")
        network = await self.networks.Inspect(
            network_pb2.InspectNetworkRequest(id=request.match_info["id"]))
        container = await self._container(body.string("Container"))
        await self.containers.ConnectNetwork(container_pb2.ConnectNetworkRequest(
            id=container.id, endpoint=endpoint_request(network.id, config)))
        return web.Response(status=200)

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await json_body(request, "network.DisconnectOptions")
        force, container_ref = body.boolean("Force"), body.string("Container")
        network = await self.networks.Inspect(
            network_pb2.InspectNetworkRequest(id=request.match_info["id"]))
        try:
            container_id = (await self._container(container_ref)).id
        except NotFound:
            # A forced disconnect also clears the endpoint of a container gone for good.
            if not force:
                raise
            await self.networks.Disconnect(network_pb2.DisconnectRequest(
                container_id=container_ref, network=network.id, force=force))
            return web.Response(status=200)
        await self.containers.DisconnectNetwork(container_pb2.DisconnectNetworkRequest(
            id=container_id, network=network.id, force=force))
        return web.Response(status=200)
