"""Endpoints: connecting a container to a network and disconnecting it, with
Docker's checks (host and none networks, shared namespaces, duplicate
endpoints, aliases, static addresses, MAC addresses). An endpoint of a
container without a sandbox is only recorded; it is wired when the sandbox
is built. Callers hold the manager's lock."""

from __future__ import annotations

import ipaddress

from services.common.errors import Internal, InvalidArgument, PermissionDenied
from services.network import ipam
from services.network.networks import Networks
from services.network.specs import EndpointSpec, EndpointView, new_id
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord
from services.network.wiring import KernelWiring


def check_connectable(network: NetworkRecord, sandbox: SandboxRecord | None) -> None:
    if network.config_only:
        raise PermissionDenied("cannot create endpoint on configuration-only network")
    if network.driver == "host" or (sandbox is not None and sandbox.mode == "host"):
        raise InvalidArgument("container cannot be disconnected from host network or "
                              "connected to host network")
    if sandbox is not None and sandbox.mode == "cni":
        raise InvalidArgument("a pod sandbox is connected by its CNI network only")
    if sandbox is not None and sandbox.mode.startswith("container:"):
        raise InvalidArgument("container sharing network namespace with another container "
                              "or host cannot be connected to any other network")
    if network.driver == "null" or (sandbox is not None and sandbox.mode == "none"):
        raise InvalidArgument("container cannot be connected to multiple networks with one "
                              "of the networks in private (none) mode")


def check_request(network: NetworkRecord, spec: EndpointSpec) -> None:
    if spec.aliases and not network.is_user_defined:
        raise InvalidArgument("network-scoped alias is supported only for containers in "
                              "user defined networks")
    if spec.mac_address and not ipam.valid_mac(spec.mac_address):
        raise InvalidArgument(f"invalid MAC address: {spec.mac_address}")
    for address in spec.link_local_ips:
        ipam.link_local(address)
    _check_static_ips(network, spec.ipv4_address, spec.ipv6_address)


def _check_static_ips(network: NetworkRecord, ipv4: str, ipv6: str) -> None:
    if not (ipv4 or ipv6):
        return
    if not network.is_user_defined:
        raise InvalidArgument("user specified IP address is supported on user defined "
                              "networks only")
    if (ipv4 and not network.user_subnet) or (ipv6 and not network.user_subnet6):
        raise InvalidArgument("user specified IP address is supported only when "
                              "connecting to networks with user configured subnets")
    if ipv4:
        ipam.claim_static(ipaddress.IPv4Network(network.subnet), ipv4, set())
    if ipv6:
        ipam.claim_static6(ipaddress.IPv6Network(network.subnet6), ipv6, set())


def new_record(network: NetworkRecord, container_id: str, name: str,
               spec: EndpointSpec) -> EndpointRecord:
    return EndpointRecord(
        network_id=network.id, container_id=container_id, container_name=name,
        endpoint_id=new_id(), ipv4_requested=spec.ipv4_address,
        ipv6_requested=spec.ipv6_address,
        mac_requested=spec.mac_address, aliases=list(dict.fromkeys(spec.aliases)),
        links=list(spec.links), link_local_ips=list(spec.link_local_ips),
        gw_priority=spec.gw_priority, driver_opts=dict(spec.driver_opts))


class Endpoints:
    def __init__(self, store: NetworkStore, networks: Networks, wiring: KernelWiring) -> None:
        self.store = store
        self.networks = networks
        self.wiring = wiring

    async def connect(self, container_id: str, container_name: str,
                      spec: EndpointSpec) -> EndpointView | None:
        """The wired endpoint; None when the container has no sandbox yet."""
        network = self.networks.find(spec.network)
        sandbox = self.store.sandbox(container_id)
        check_connectable(network, sandbox)
        existing = self.store.endpoint(network.id, container_id)
        if existing is not None and existing.state == "connected" and sandbox is None:
            return None   # as Docker: a stopped container keeps its config
        if existing is not None and existing.state == "connected":
            raise PermissionDenied(f"endpoint with name {container_name} already exists "
                                   f"in network {network.name}")
        check_request(network, spec)
        endpoint = new_record(network, container_id, container_name, spec)
        self.store.save_endpoint(endpoint)
        if sandbox is None:
            return None
        try:
            await self.wiring.wire(sandbox, network, endpoint)
            await self.wiring.update_default_routes(sandbox)
            await self.wiring.apply_firewall()
        except BaseException:
            await self.wiring.unwire(network, endpoint, announce=False)
            if existing is None:
                self.store.delete_endpoint(network.id, container_id)
            else:
                self.store.save_endpoint(existing)
            await self.wiring.apply_firewall()
            raise
        return EndpointView(network, endpoint)

    async def disconnect(self, container_id: str, ref: str, force: bool) -> None:
        network = self.networks.find(ref)
        sandbox = self.store.sandbox(container_id)
        if network.driver == "host" or (sandbox is not None and sandbox.mode == "host"):
            raise InvalidArgument("container cannot be disconnected from host network or "
                                  "connected to host network")
        endpoint = self.store.endpoint(network.id, container_id)
        if endpoint is None and sandbox is None and not force:
            # A container not started yet may name this network in its create-time
            # list, which only the container service holds: record the choice so
            # its start leaves the network out (Compose disconnects before start).
            self.store.save_endpoint(EndpointRecord(
                network_id=network.id, container_id=container_id,
                endpoint_id=new_id(), state="disconnected"))
            return
        if endpoint is None or endpoint.state != "connected":
            if force:
                return
            raise Internal(f"container {container_id} is not connected to network "
                           f"{network.name}")
        if endpoint.wired:
            await self.wiring.unwire(network, endpoint)
        endpoint.state = "disconnected"
        self.store.save_endpoint(endpoint)
        if sandbox is not None and sandbox.netns_path:
            await self.wiring.update_default_routes(sandbox)
        await self.wiring.apply_firewall()
