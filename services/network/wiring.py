"""Kernel wiring: bridges, veth pairs, addresses, routes, netns files and the
nftables ruleset, and (through wiring_macvlan.py) the parents and links of
macvlan and ipvlan networks. The one module of the domain that calls the
kernel and the firewall; kernel work runs in threads, and callers hold the
manager's lock."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

from services.common.errors import BerthError, Internal
from services.common.events import EventBus
from services.network import ipam, kernel, wiring_macvlan
from services.network.firewall import BridgeRules, Firewall, PortRule
from services.network.specs import MASQUERADE_OPTION, EndpointView, bool_option
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord

log = logging.getLogger("berth.network")


class KernelWiring:
    def __init__(self, prefix: str, store: NetworkStore, events: EventBus) -> None:
        self.prefix = prefix
        self.store = store
        self.events = events
        self.firewall = Firewall(prefix)

    # -- bridges ------------------------------------------------------------

    async def enable_forwarding(self) -> None:
        await asyncio.to_thread(kernel.enable_forwarding)

    async def bring_up_bridge(self, network: NetworkRecord) -> None:
        """Create the bridge; pick its subnet first when it has none yet."""
        ours = [ipaddress.IPv4Network(n.subnet) for n in self.store.networks()
                if n.subnet and n.id != network.id and not n.config_only]

        def work() -> None:
            with ipam.host_lock():
                if network.enable_ipv4 and (
                        not network.subnet or self._subnet_taken_elsewhere(network)):
                    subnet = ipam.pick_subnet([*kernel.host_networks(), *ours])
                    network.subnet = str(subnet)
                    network.gateway = ipam.default_gateway(subnet)
                prefixlen = ipaddress.IPv4Network(network.subnet).prefixlen \
                    if network.subnet else 0
                prefixlen6 = ipaddress.IPv6Network(network.subnet6).prefixlen \
                    if network.subnet6 else 0
                kernel.ensure_bridge(network.bridge, network.gateway, prefixlen,
                                     network.mtu, network.gateway6, prefixlen6)
        try:
            await asyncio.to_thread(work)
        except Exception:
            await self.delete_bridge(network)
            raise
        self.store.save_network(network)

    @staticmethod
    def _subnet_taken_elsewhere(network: NetworkRecord) -> bool:
        """A re-adopted default bridge whose subnet another engine took meanwhile."""
        if not network.builtin or kernel.link_exists(network.bridge):
            return False
        subnet = ipaddress.IPv4Network(network.subnet)
        return any(subnet.overlaps(other) for other in kernel.host_networks())

    @staticmethod
    async def delete_bridge(network: NetworkRecord) -> None:
        """Delete the bridge the engine made; an adopted host bridge stays."""
        if not network.bridge_adopted:
            await asyncio.to_thread(kernel.delete_link, network.bridge)

    # -- macvlan and ipvlan parents -------------------------------------------

    async def bring_up_parent(self, network: NetworkRecord) -> None:
        """Make the parent link Docker would make (a dummy or a VLAN link)."""
        made = await asyncio.to_thread(wiring_macvlan.prepare_parent, network)
        if made:
            network.created_parent = made
            self.store.save_network(network)

    @staticmethod
    async def delete_parent(network: NetworkRecord) -> None:
        if network.created_parent:
            await asyncio.to_thread(wiring_macvlan.remove_parent, network.created_parent)

    async def bring_up(self, network: NetworkRecord) -> None:
        """At service start: a parent the user named may be gone meanwhile;
        its network stays, and its containers fail to start until it is back."""
        if network.driver == "bridge":
            await self.bring_up_bridge(network)
        elif network.driver in wiring_macvlan.DRIVERS:
            try:
                await self.bring_up_parent(network)
            except BerthError as exc:
                log.warning("network %s has no parent link: %s", network.name, exc)

    async def take_down(self, network: NetworkRecord) -> None:
        if network.driver == "bridge":
            await self.delete_bridge(network)
        else:
            await self.delete_parent(network)

    # -- netns files ----------------------------------------------------------

    @staticmethod
    async def create_netns(path: Path) -> None:
        await asyncio.to_thread(kernel.create_netns, path)

    @staticmethod
    async def remove_netns(path: Path) -> None:
        await asyncio.to_thread(kernel.remove_netns, path)

    @staticmethod
    async def release_netns_dir(directory: Path) -> None:
        await asyncio.to_thread(kernel.release_netns_dir, directory)

    # -- endpoints ------------------------------------------------------------

    def views(self, container_id: str) -> list[EndpointView]:
        by_id = {n.id: n for n in self.store.networks()}
        return [EndpointView(by_id[e.network_id], e)
                for e in self.store.endpoints(container_id=container_id)
                if e.network_id in by_id]

    def port_target(self, container_id: str) -> str:
        """The address published ports reach: the first bridge endpoint with a way
        out (as in Docker, other drivers publish no ports)."""
        for view in self.views(container_id):
            if view.record.ip and not view.network.internal and view.network.driver == "bridge":
                return view.record.ip
        return ""

    def reserved(self, network: NetworkRecord) -> set[str]:
        taken = {e.ip for e in self.store.endpoints(network_id=network.id) if e.ip}
        return taken | {network.gateway} | set(network.aux_addresses.values())

    async def wire(self, sandbox: SandboxRecord, network: NetworkRecord,
                   endpoint: EndpointRecord) -> None:
        """Address the endpoint and make its link; the default route is chosen
        afterwards, for all the container's endpoints, by update_default_routes."""
        subnet = ipaddress.IPv4Network(network.subnet) if network.subnet else None
        reserved = self.reserved(network)
        if subnet is None:
            endpoint.ip = ""
        elif endpoint.ipv4_requested:
            endpoint.ip = ipam.claim_static(subnet, endpoint.ipv4_requested, reserved)
        else:
            endpoint.ip = ipam.allocate(subnet, network.ip_range, reserved)
        sublink = wiring_macvlan.sublink_of(network) \
            if network.driver in wiring_macvlan.DRIVERS else None
        # An ipvlan link shares its parent's MAC address.
        endpoint.mac = "" if sublink and sublink.kind == "ipvlan" else \
            endpoint.mac_requested or ipam.mac_for(endpoint.ip or None)
        if network.subnet6:
            subnet6 = ipaddress.IPv6Network(network.subnet6)
            reserved6 = {e.ip6 for e in self.store.endpoints(network_id=network.id)
                         if e.ip6} | {network.gateway6}
            endpoint.ip6 = ipam.claim_static6(subnet6, endpoint.ipv6_requested, reserved6) \
                if endpoint.ipv6_requested else ipam.allocate6(subnet6, reserved6)
        taken = {e.ifname for e in self.store.endpoints(container_id=endpoint.container_id)
                 if e.wired}
        endpoint.ifname = next(f"eth{i}" for i in range(len(taken) + 1) if f"eth{i}" not in taken)
        endpoint.host_ifname = "" if sublink else kernel.unique_name(self.prefix, "v")
        endpoint.state = "connected"
        self.store.save_endpoint(endpoint)
        wiring = kernel.Wiring(
            netns_path=sandbox.netns_path, bridge=network.bridge,
            host_ifname=endpoint.host_ifname, ifname=endpoint.ifname, address=endpoint.ip,
            prefixlen=subnet.prefixlen if subnet else 0, mac=endpoint.mac, mtu=network.mtu,
            address6=endpoint.ip6,
            prefixlen6=ipaddress.IPv6Network(network.subnet6).prefixlen if endpoint.ip6 else 0,
            link_local=tuple(ipam.link_local(a) for a in endpoint.link_local_ips))
        try:
            await asyncio.to_thread(self._make_link, wiring, sublink)
        except Exception as exc:
            self.release(endpoint)
            raise Internal(f"failed to set up endpoint on network {network.name}: "
                           f"{exc}") from exc
        self.events.publish("connect", network.id, {
            "container": endpoint.container_id, "name": network.name, "type": network.driver})

    @staticmethod
    def _make_link(wiring: kernel.Wiring, sublink: wiring_macvlan.SubLink | None) -> None:
        if sublink is None:
            kernel.wire(wiring)
            return
        wiring_macvlan.add_endpoint_link(sublink, wiring.netns_path, wiring.ifname,
                                         wiring.mac, wiring.mtu)
        try:
            kernel.configure_inside(wiring)
        except Exception:
            kernel.delete_link_inside(wiring.netns_path, wiring.ifname)
            raise

    async def unwire(self, network: NetworkRecord, endpoint: EndpointRecord,
                     announce: bool = True) -> None:
        if endpoint.host_ifname:
            await asyncio.to_thread(kernel.delete_link, endpoint.host_ifname)
        elif endpoint.wired:
            sandbox = self.store.sandbox(endpoint.container_id)
            if sandbox is not None and sandbox.netns_path and Path(sandbox.netns_path).exists():
                await asyncio.to_thread(kernel.delete_link_inside, sandbox.netns_path,
                                        endpoint.ifname)
        was_wired = endpoint.wired
        self.release(endpoint)
        if announce and was_wired:
            self.events.publish("disconnect", network.id, {
                "container": endpoint.container_id, "name": network.name,
                "type": network.driver})

    def release(self, endpoint: EndpointRecord) -> None:
        endpoint.ip = endpoint.ip6 = endpoint.mac = endpoint.ifname = endpoint.host_ifname = ""
        if self.store.endpoint(endpoint.network_id, endpoint.container_id) is not None:
            self.store.save_endpoint(endpoint)

    async def release_vanished(self, container_id: str) -> None:
        """Release the endpoints whose veth is gone (found when re-adopting); a
        macvlan/ipvlan link lives as long as the netns, which the caller checked."""
        for endpoint in self.store.endpoints(container_id=container_id):
            if endpoint.host_ifname and not await asyncio.to_thread(
                    kernel.link_exists, endpoint.host_ifname):
                self.release(endpoint)

    async def update_default_routes(self, sandbox: SandboxRecord) -> None:
        """Route through the first endpoint in Docker's order (highest GwPriority,
        then network name) on a network with a way out, for each IP family."""
        ranked = sorted((v for v in self.views(sandbox.container_id)
                         if v.record.wired and not v.network.internal),
                        key=lambda v: v.docker_rank)
        route = next((self._default_route(v, v.network.gateway) for v in ranked
                      if v.record.ip), None)
        route6 = next((self._default_route(v, v.network.gateway6) for v in ranked
                       if v.record.ip6), None)
        await asyncio.to_thread(kernel.set_default_routes, sandbox.netns_path, route, route6)

    @staticmethod
    def _default_route(view: EndpointView, gateway: str) -> kernel.DefaultRoute:
        network = view.network
        if network.driver in wiring_macvlan.DRIVERS and \
                wiring_macvlan.sublink_of(network).routes_by_device:
            return kernel.DefaultRoute("", view.record.ifname)
        return kernel.DefaultRoute(gateway, "")

    @staticmethod
    async def forget_udp_flows(sandbox: SandboxRecord) -> None:
        udp = {p["host_port"] for p in sandbox.ports if p["proto"] == "udp"}
        if udp:
            await asyncio.to_thread(kernel.forget_udp_flows, udp)

    # -- firewall -------------------------------------------------------------

    async def apply_firewall(self) -> None:
        bridges = []
        for network in self.store.networks():
            if network.driver != "bridge" or not (network.subnet or network.subnet6):
                continue
            veths = tuple(e.host_ifname for e in self.store.endpoints(network_id=network.id)
                          if e.host_ifname)
            bridges.append(BridgeRules(
                network.bridge, network.subnet, network.internal, network.icc, veths,
                network.subnet6, bool_option(network.options.get(MASQUERADE_OPTION, "true"))))
        rules = []
        for sandbox in self.store.sandboxes():
            target = self.port_target(sandbox.container_id)
            if not target:
                continue
            for port in sandbox.ports:
                rules.append(PortRule(port["proto"], port["host_ip"], port["host_port"],
                                      target, port["container_port"]))
        await self.firewall.apply(bridges, rules)

    async def remove_firewall(self) -> None:
        await self.firewall.remove()
