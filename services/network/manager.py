"""The network service's domain behind one facade: every change runs under
one asyncio lock, so IP allocation, port reservation and the nftables
ruleset always agree with the store. The work itself is in networks.py,
endpoints.py, sandboxes.py and wiring.py (the kernel); a failure part-way
undoes what the call created."""

from __future__ import annotations

import asyncio
import ipaddress

from prometheus_client import Gauge

from services.common.config import Config
from services.common.events import EventBus
from services.common.filters import Filters
from services.network import ipam
from services.network.dns import DnsListeners, Resolver
from services.network.dns_lookup import DnsLookup
from services.network.endpoints import Endpoints
from services.network.networks import Networks
from services.network.pods import PodNetworks
from services.network.sandboxes import Sandboxes
from services.network.specs import (
    Connected,
    EndpointSpec,
    NetworkSpec,
    SandboxSpec,
    SandboxView,
)
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore
from services.network.wiring import KernelWiring

NETWORKS = Gauge("berth_network_networks", "Networks of this engine.")
ENDPOINTS = Gauge("berth_network_endpoints", "Endpoints wired in running sandboxes.")
FREE_ADDRESSES = Gauge("berth_network_free_addresses",
                       "Unallocated IPv4 addresses per bridge network.", ["network"])


class NetworkManager:
    def __init__(self, config: Config, store: NetworkStore, events: EventBus) -> None:
        self.store = store
        self.wiring = KernelWiring(config.instance_prefix, store, events)
        lookup = DnsLookup(store, self.wiring)
        self.dns = DnsListeners(Resolver(lookup.lookup, lookup.reverse, lookup.upstreams,
                                             lookup.ndots_set))
        self.networks = Networks(config.instance_prefix, store, events, self.wiring)
        self.endpoints = Endpoints(store, self.networks, self.wiring)
        netns_dir = config.exec_root / "netns"
        self.pods = PodNetworks(config, store, netns_dir)
        self.sandboxes = Sandboxes(netns_dir, store, self.networks, self.wiring, self.dns,
                                   self.pods)
        self._lock = asyncio.Lock()

    # -- start and stop -------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self.wiring.enable_forwarding()
            await self.networks.bring_up()
            await self.sandboxes.readopt()
            await self.wiring.apply_firewall()
            self._refresh_metrics()

    async def shutdown(self) -> None:
        """Leave running containers wired; remove what nothing uses."""
        async with self._lock:
            self.dns.stop_all()
            self.sandboxes.close_ports()
            await self.networks.take_down_unused()
            await self.sandboxes.release_host()

    # -- networks -------------------------------------------------------

    def find(self, ref: str) -> NetworkRecord:
        return self.networks.find(ref)

    def list(self, filters: Filters) -> list[NetworkRecord]:
        return self.networks.list(filters)

    def containers_of(self, network: NetworkRecord) -> list[EndpointRecord]:
        return self.networks.containers_of(network)

    async def create(self, spec: NetworkSpec) -> NetworkRecord:
        self.networks.check_driver(spec)
        async with self._lock:
            network = await self.networks.create(spec)
            self._refresh_metrics()
            return network

    async def remove(self, ref: str) -> None:
        async with self._lock:
            await self.networks.remove(ref)
            self._refresh_metrics()

    async def prune(self, filters: Filters) -> list[str]:
        until = self.networks.prune_limit(filters)
        async with self._lock:
            try:
                return await self.networks.prune(filters, until)
            finally:
                self._refresh_metrics()

    # -- endpoints ------------------------------------------------------

    async def connect(self, container_id: str, container_name: str,
                      spec: EndpointSpec) -> Connected:
        async with self._lock:
            view = await self.endpoints.connect(container_id, container_name, spec)
            if view is None:
                return Connected()
            replaced = ""
            if view.network.is_user_bridge:
                replaced = await self.sandboxes.use_embedded_resolver(container_id)
            added = self.sandboxes.add_host_records(container_id, view.record)
            self._refresh_metrics()
            return Connected(view, added, replaced)

    async def disconnect(self, container_id: str, ref: str, force: bool) -> list[str]:
        """The /etc/hosts lines removed (none unless the sandbox is live)."""
        async with self._lock:
            network = self.networks.find(ref)
            before = self.store.endpoint(network.id, container_id)
            await self.endpoints.disconnect(container_id, ref, force)
            removed = []
            if before is not None and before.wired:
                removed = self.sandboxes.remove_host_records(container_id, before)
            self._refresh_metrics()
            return removed

    # -- sandboxes ------------------------------------------------------

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxView:
        async with self._lock:
            view = await self.sandboxes.create(spec)
            self._refresh_metrics()
            return view

    def get_sandbox(self, container_id: str) -> SandboxView:
        return self.sandboxes.get(container_id)

    def plan_sandbox(self, spec: SandboxSpec) -> SandboxView:
        return self.sandboxes.plan(spec)

    async def destroy_sandbox(self, container_id: str) -> None:
        async with self._lock:
            await self.sandboxes.teardown(container_id)
            self._refresh_metrics()

    async def forget_container(self, container_id: str) -> None:
        async with self._lock:
            await self.sandboxes.forget_container(container_id)
            self._refresh_metrics()

    async def rename_container(self, container_id: str, new_name: str) -> None:
        async with self._lock:
            self.sandboxes.rename_container(container_id, new_name)

    # -- metrics ----------------------------------------------------------

    def _refresh_metrics(self) -> None:
        networks = self.store.networks()
        NETWORKS.set(len(networks))
        ENDPOINTS.set(sum(1 for e in self.store.endpoints() if e.wired))
        FREE_ADDRESSES.clear()
        for network in networks:
            if network.subnet:
                FREE_ADDRESSES.labels(network.name).set(ipam.free_count(
                    ipaddress.IPv4Network(network.subnet), network.ip_range,
                    self.wiring.reserved(network)))

    def counts(self) -> dict[str, int]:
        return {"networks": len(self.store.networks())}
