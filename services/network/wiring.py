"""Kernel wiring: bridges, veth pairs, addresses, routes, netns files and the
nftables ruleset. The one module of the domain that calls kernel.py and the
firewall; kernel work runs in threads, and callers hold the manager's lock."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from services.common.errors import Internal
from services.common.events import EventBus
from services.network import ipam, kernel
from services.network.firewall import BridgeRules, Firewall, PortRule
from services.network.specs import MASQUERADE_OPTION, EndpointView, bool_option
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord


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
                if n.subnet and n.id != network.id]

        def work() -> None:
            with ipam.host_lock():
                if not network.subnet or self._subnet_taken_elsewhere(network):
                    subnet = ipam.pick_subnet([*kernel.host_networks(), *ours])
                    network.subnet = str(subnet)
                    network.gateway = ipam.default_gateway(subnet)
                subnet = ipaddress.IPv4Network(network.subnet)
                prefixlen6 = ipaddress.IPv6Network(network.subnet6).prefixlen \
                    if network.subnet6 else 0
                kernel.ensure_bridge(network.bridge, network.gateway, subnet.prefixlen,
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
        await asyncio.to_thread(kernel.delete_link, network.bridge)

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
        """The address published ports reach: the first endpoint with a way out."""
        for view in self.views(container_id):
            if view.record.ip and not view.network.internal:
                return view.record.ip
        return ""

    def reserved(self, network: NetworkRecord) -> set[str]:
        taken = {e.ip for e in self.store.endpoints(network_id=network.id) if e.ip}
        return taken | {network.gateway} | set(network.aux_addresses.values())

    async def wire(self, sandbox: SandboxRecord, network: NetworkRecord,
                   endpoint: EndpointRecord) -> None:
        subnet = ipaddress.IPv4Network(network.subnet)
        reserved = self.reserved(network)
        if endpoint.ipv4_requested:
            endpoint.ip = ipam.claim_static(subnet, endpoint.ipv4_requested, reserved)
        else:
            endpoint.ip = ipam.allocate(subnet, network.ip_range, reserved)
        endpoint.mac = endpoint.mac_requested or ipam.mac_for(endpoint.ip)
        if network.subnet6:
            reserved6 = {e.ip6 for e in self.store.endpoints(network_id=network.id) if e.ip6}
            endpoint.ip6 = ipam.allocate6(ipaddress.IPv6Network(network.subnet6),
                                          reserved6 | {network.gateway6})
        taken = {e.ifname for e in self.store.endpoints(container_id=endpoint.container_id)
                 if e.wired}
        endpoint.ifname = next(f"eth{i}" for i in range(len(taken) + 1) if f"eth{i}" not in taken)
        endpoint.host_ifname = kernel.unique_name(self.prefix, "v")
        endpoint.state = "connected"
        has_route = any(v.record.wired and not v.network.internal
                        for v in self.views(endpoint.container_id)
                        if v.network.id != network.id)
        needs_route = not network.internal and not has_route
        self.store.save_endpoint(endpoint)
        wiring = kernel.Wiring(
            netns_path=sandbox.netns_path, bridge=network.bridge,
            host_ifname=endpoint.host_ifname, ifname=endpoint.ifname, address=endpoint.ip,
            prefixlen=subnet.prefixlen, mac=endpoint.mac,
            gateway=network.gateway if needs_route else "", mtu=network.mtu,
            address6=endpoint.ip6,
            prefixlen6=ipaddress.IPv6Network(network.subnet6).prefixlen if endpoint.ip6 else 0,
            gateway6=network.gateway6 if needs_route else "")
        try:
            await asyncio.to_thread(kernel.wire, wiring)
        except Exception as exc:
            self.release(endpoint)
            raise Internal(f"failed to set up endpoint on network {network.name}: "
                           f"{exc}") from exc
        self.events.publish("connect", network.id, {
            "container": endpoint.container_id, "name": network.name, "type": network.driver})

    async def unwire(self, network: NetworkRecord, endpoint: EndpointRecord,
                     announce: bool = True) -> None:
        if endpoint.host_ifname:
            await asyncio.to_thread(kernel.delete_link, endpoint.host_ifname)
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
        """Release the endpoints whose veth is gone (found when re-adopting)."""
        for endpoint in self.store.endpoints(container_id=container_id):
            if endpoint.wired and not await asyncio.to_thread(
                    kernel.link_exists, endpoint.host_ifname):
                self.release(endpoint)

    async def restore_default_route(self, sandbox: SandboxRecord) -> None:
        """After a disconnect, route through the first network left with a way out."""
        for view in self.views(sandbox.container_id):
            if view.record.wired and not view.network.internal:
                await asyncio.to_thread(kernel.set_default_route, sandbox.netns_path,
                                        view.network.gateway,
                                        view.network.gateway6 if view.record.ip6 else "")
                return

    @staticmethod
    async def forget_udp_flows(sandbox: SandboxRecord) -> None:
        udp = {p["host_port"] for p in sandbox.ports if p["proto"] == "udp"}
        if udp:
            await asyncio.to_thread(kernel.forget_udp_flows, udp)

    # -- firewall -------------------------------------------------------------

    async def apply_firewall(self) -> None:
        bridges = []
        for network in self.store.networks():
            if network.driver != "bridge" or not network.subnet:
                continue
            veths = tuple(e.host_ifname for e in self.store.endpoints(network_id=network.id)
                          if e.wired)
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
