"""gRPC servicer of the network service: decode, call the domain, encode."""

from __future__ import annotations

from berth.network.v1 import network_pb2, network_pb2_grpc
from services.common.errors import InvalidArgument, NotFound
from services.common.events import EventBus
from services.common.filters import Filters
from services.network import reconcile
from services.network.manager import NetworkManager
from services.network.pods import PodRef
from services.network.specs import (
    EndpointSpec,
    EndpointView,
    NetworkSpec,
    SandboxSpec,
    SandboxView,
)
from services.network.store import NetworkRecord


def _endpoint_spec(message: network_pb2.EndpointRequest) -> EndpointSpec:
    return EndpointSpec(network=message.network, ipv4_address=message.ipv4_address,
                        ipv6_address=message.ipv6_address,
                        mac_address=message.mac_address, aliases=list(message.aliases),
                        links=list(message.links), link_local_ips=list(message.link_local_ips),
                        gw_priority=message.gw_priority, driver_opts=dict(message.driver_opts))


def _network_spec(request: network_pb2.CreateNetworkRequest) -> NetworkSpec:
    ipv4 = [c for c in request.ipam.config if ":" not in c.subnet]
    ipv6 = [c for c in request.ipam.config if ":" in c.subnet]
    if len(ipv4) > 1 or len(ipv6) > 1:
        raise InvalidArgument("a bridge network takes one IPv4 and one IPv6 subnet")
    config = ipv4[0] if ipv4 else network_pb2.IPAMConfig()
    config6 = ipv6[0] if ipv6 else network_pb2.IPAMConfig()
    return NetworkSpec(
        name=request.name, driver=request.driver, internal=request.internal,
        attachable=request.attachable, enable_ipv6=request.enable_ipv6,
        subnet=config.subnet, gateway=config.gateway, ip_range=config.ip_range,
        subnet6=config6.subnet, gateway6=config6.gateway,
        aux_addresses=dict(config.aux_addresses), ipam_options=dict(request.ipam.options),
        options=dict(request.options), labels=dict(request.labels), scope=request.scope,
        ingress=request.ingress,
        enable_ipv4=request.enable_ipv4 if request.HasField("enable_ipv4") else True,
        config_only=request.config_only, config_from=request.config_from)


def _endpoint(view: EndpointView) -> network_pb2.Endpoint:
    network, record = view.network, view.record
    return network_pb2.Endpoint(
        network_id=network.id, network_name=network.name, endpoint_id=record.endpoint_id,
        gateway=network.gateway if record.ip else "", ip_address=record.ip,
        ip_prefix_len=view.prefixlen, mac_address=record.mac, aliases=record.aliases,
        dns_names=view.dns_names, links=record.links,
        ipv4_address_requested=record.ipv4_requested,
        global_ipv6_address=record.ip6, global_ipv6_prefix_len=view.prefixlen6,
        ipv6_gateway=network.gateway6 if record.ip6 else "",
        link_local_ips=record.link_local_ips, gw_priority=record.gw_priority,
        ipv6_address_requested=record.ipv6_requested, driver_opts=record.driver_opts)


def _sandbox(view: SandboxView) -> network_pb2.Sandbox:
    return network_pb2.Sandbox(
        container_id=view.container_id, netns_path=view.netns_path,
        network_mode=view.network_mode, hosts=view.hosts, resolv_conf=view.resolv_conf,
        endpoints=[_endpoint(v) for v in view.endpoints],
        ports=[network_pb2.PublishedPort(container_port=p.key, host_ip=p.host_ip,
                                         host_port=p.host_port) for p in view.ports])


def _sandbox_spec(request: network_pb2.CreateSandboxRequest) -> SandboxSpec:
    return SandboxSpec(
        container_id=request.container_id, container_name=request.container_name,
        hostname=request.hostname, domainname=request.domainname,
        network_mode=request.network_mode,
        endpoints=[_endpoint_spec(e) for e in request.endpoints],
        port_mappings=[(m.container_port, m.host_ip, m.host_port)
                       for m in request.port_mappings],
        publish_all_ports=request.publish_all_ports,
        exposed_ports=list(request.exposed_ports), dns=list(request.dns),
        dns_search=list(request.dns_search), dns_options=list(request.dns_options),
        extra_hosts=list(request.extra_hosts),
        container_netns_path=request.container_netns_path,
        pod=PodRef(name=request.pod.name, namespace=request.pod.namespace,
                   uid=request.pod.uid),
        owner=request.owner)


class NetworkServicer(network_pb2_grpc.NetworkServiceServicer):
    def __init__(self, manager: NetworkManager, events: EventBus) -> None:
        self._manager = manager
        self._events = events

    def _network(self, record: NetworkRecord) -> network_pb2.Network:
        ipam = network_pb2.IPAM(driver="default", options=record.ipam_options)
        if record.subnet:
            ipam.config.append(network_pb2.IPAMConfig(
                subnet=record.subnet, gateway=record.gateway, ip_range=record.ip_range,
                aux_addresses=record.aux_addresses))
        if record.subnet6:
            ipam.config.append(network_pb2.IPAMConfig(subnet=record.subnet6,
                                                      gateway=record.gateway6))
        containers = {
            e.container_id: network_pb2.EndpointResource(
                name=e.container_name, endpoint_id=e.endpoint_id, mac_address=e.mac,
                ipv4_address=f"{e.ip}/{record.subnet.split('/')[1]}" if e.ip else "",
                ipv6_address=f"{e.ip6}/{record.subnet6.split('/')[1]}" if e.ip6 else "")
            for e in self._manager.containers_of(record)}
        return network_pb2.Network(
            id=record.id, name=record.name, created=record.created, scope="local",
            driver=record.driver, enable_ipv6=record.enable_ipv6, ipam=ipam,
            internal=record.internal, attachable=record.attachable, containers=containers,
            options=record.options, labels=record.labels, enable_ipv4=record.enable_ipv4,
            config_only=record.config_only, config_from=self._config_source(record))

    def _config_source(self, record: NetworkRecord) -> str:
        """The name of the config-only network it took its config from, as Docker shows."""
        if not record.config_from:
            return ""
        try:
            return self._manager.find(record.config_from).name
        except NotFound:
            return ""

    async def Create(self, request, context):  # noqa: N802
        record = await self._manager.create(_network_spec(request))
        return network_pb2.CreateNetworkResponse(id=record.id)

    async def Inspect(self, request, context):  # noqa: N802
        return self._network(self._manager.find(request.id))

    async def List(self, request, context):  # noqa: N802
        networks = self._manager.list(Filters.from_message(request.filters))
        return network_pb2.ListNetworksResponse(networks=[self._network(n) for n in networks])

    async def Remove(self, request, context):  # noqa: N802
        await self._manager.remove(request.id)
        return network_pb2.RemoveNetworkResponse()

    async def Prune(self, request, context):  # noqa: N802
        deleted = await self._manager.prune(Filters.from_message(request.filters))
        return network_pb2.PruneNetworksResponse(deleted=deleted)

    async def Connect(self, request, context):  # noqa: N802
        connected = await self._manager.connect(request.container_id,
                                                request.container_name,
                                                _endpoint_spec(request.endpoint))
        if connected.endpoint is None:
            return network_pb2.ConnectResponse()
        sandbox = self._manager.get_sandbox(request.container_id)
        return network_pb2.ConnectResponse(
            endpoint=_endpoint(connected.endpoint),
            resolv_conf=sandbox.resolv_conf if connected.resolv_conf_replaced else "",
            resolv_conf_replaced=connected.resolv_conf_replaced,
            hosts_added=connected.hosts_added)

    async def Disconnect(self, request, context):  # noqa: N802
        removed = await self._manager.disconnect(request.container_id, request.network,
                                                 request.force)
        return network_pb2.DisconnectResponse(hosts_removed=removed)

    async def CreateSandbox(self, request, context):  # noqa: N802
        return _sandbox(await self._manager.create_sandbox(_sandbox_spec(request)))

    async def PlanSandbox(self, request, context):  # noqa: N802
        return _sandbox(self._manager.plan_sandbox(_sandbox_spec(request)))

    async def GetSandbox(self, request, context):  # noqa: N802
        return _sandbox(self._manager.get_sandbox(request.container_id))

    async def DestroySandbox(self, request, context):  # noqa: N802
        await self._manager.destroy_sandbox(request.container_id)
        return network_pb2.DestroySandboxResponse()

    async def ForgetContainer(self, request, context):  # noqa: N802
        await self._manager.forget_container(request.container_id)
        return network_pb2.ForgetContainerResponse()

    async def ForgetGone(self, request, context):  # noqa: N802
        gone = await reconcile.forget_gone(self._manager, request.owner,
                                           set(request.containers), request.before_nano)
        return network_pb2.ForgetGoneResponse(containers=gone)

    async def RenameContainer(self, request, context):  # noqa: N802
        await self._manager.rename_container(request.container_id, request.new_name)
        return network_pb2.RenameContainerResponse()

    async def CniStatus(self, request, context):  # noqa: N802
        status = self._manager.pods.status()
        return network_pb2.CniStatusResponse(ready=status.ready, reason=status.reason,
                                             message=status.message)

    async def Subscribe(self, request, context):  # noqa: N802
        async for event in self._events.subscribe(request):
            yield event
