"""Networks, endpoints and sandboxes: the network service's domain logic.

Every change runs under one asyncio lock, so IP allocation, port reservation
and the nftables ruleset always agree with the store. Kernel work runs in
threads (kernel.py); a failure part-way undoes what the call created.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Gauge

from services.common.config import Config
from services.common.errors import (
    AlreadyExists,
    BerthError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.common.events import EventBus
from services.network import files, ipam, kernel
from services.network.dns import DnsListeners, Resolver
from services.network.firewall import BridgeRules, Firewall, PortRule
from services.network.pods import PodNetworks, PodRef
from services.network.ports import Published, requests_for, reserve
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord

log = logging.getLogger("berth.network")

NETWORKS = Gauge("berth_network_networks", "Networks of this engine.")
ENDPOINTS = Gauge("berth_network_endpoints", "Endpoints wired in running sandboxes.")
FREE_ADDRESSES = Gauge("berth_network_free_addresses",
                       "Unallocated IPv4 addresses per bridge network.", ["network"])

BUILTIN = ("bridge", "host", "none")
BRIDGE_MODES = ("", "default", "bridge")
MTU_OPTION = "com.docker.network.driver.mtu"
NAME_OPTION = "com.docker.network.bridge.name"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
HOST_BINDING_OPTION = "com.docker.network.bridge.host_binding_ipv4"
LIST_FILTERS = {"name", "id", "label", "driver", "type", "dangling", "scope"}
PRUNE_FILTERS = {"label", "label!", "until"}


@dataclass
class NetworkSpec:
    name: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    subnet6: str = ""
    gateway6: str = ""
    aux_addresses: dict[str, str] = field(default_factory=dict)
    ipam_options: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class EndpointSpec:
    network: str
    ipv4_address: str = ""
    mac_address: str = ""
    aliases: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


@dataclass
class SandboxSpec:
    container_id: str
    container_name: str = ""
    hostname: str = ""
    domainname: str = ""
    network_mode: str = ""
    endpoints: list[EndpointSpec] = field(default_factory=list)
    port_mappings: list[tuple[str, str, str]] = field(default_factory=list)
    publish_all_ports: bool = False
    exposed_ports: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    container_netns_path: str = ""
    pod: PodRef = field(default_factory=PodRef)


@dataclass
class EndpointView:
    network: NetworkRecord
    record: EndpointRecord

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.network.subnet).prefixlen if self.record.ip else 0

    @property
    def prefixlen6(self) -> int:
        return ipaddress.IPv6Network(self.network.subnet6).prefixlen if self.record.ip6 else 0

    @property
    def dns_names(self) -> list[str]:
        if not self.network.is_user_bridge:
            return []
        r = self.record
        return [n for n in (r.container_name, *r.aliases, r.container_id[:12]) if n]


@dataclass
class SandboxView:
    container_id: str
    netns_path: str = ""
    network_mode: str = ""
    endpoints: list[EndpointView] = field(default_factory=list)
    ports: list[Published] = field(default_factory=list)
    hosts: str = ""
    resolv_conf: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return os.urandom(32).hex()


def _bool_option(value: str) -> bool:
    return value.strip().lower() in ("1", "t", "true", "yes", "on")


def _label_matches(labels: dict[str, str], expr: str) -> bool:
    key, sep, value = expr.partition("=")
    return key in labels and (not sep or labels[key] == value)


def _name_matches(name: str, pattern: str) -> bool:
    """Docker's filters.Match: the value is a regular expression searched in the name."""
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name


def _parse_until(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument(f"invalid filter 'until={value}'") from exc


class NetworkManager:
    def __init__(self, config: Config, store: NetworkStore, events: EventBus) -> None:
        self.prefix = config.instance_prefix
        self.netns_dir = config.exec_root / "netns"
        self.store = store
        self.events = events
        self.firewall = Firewall(self.prefix)
        self.dns = DnsListeners(Resolver(self._dns_lookup, self._dns_reverse,
                                         self._dns_upstreams))
        self._lock = asyncio.Lock()
        self._port_sockets: dict[str, list[socket.socket]] = {}
        self.pods = PodNetworks(config, store, self.netns_dir)

    # -- start and stop -------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await asyncio.to_thread(kernel.enable_forwarding)
            await self._ensure_builtin_networks()
            for network in self.store.networks():
                if network.driver == "bridge":
                    await self._bring_up_bridge(network)
            await self._readopt_sandboxes()
            await self._apply_firewall()
            for network in self.store.networks():
                if network.is_user_bridge:
                    await self.dns.start(network.id, network.gateway)
            self._refresh_metrics()

    async def shutdown(self) -> None:
        """Leave running containers wired; remove what nothing uses."""
        async with self._lock:
            self.dns.stop_all()
            for socks in self._port_sockets.values():
                for sock in socks:
                    sock.close()
            self._port_sockets.clear()
            for network in self.store.networks():
                if network.driver == "bridge" and not self._wired(network.id):
                    await asyncio.to_thread(kernel.delete_link, network.bridge)
            if not self.store.sandboxes():
                await self.firewall.remove()
                await asyncio.to_thread(kernel.release_netns_dir, self.netns_dir)

    async def _ensure_builtin_networks(self) -> None:
        names = {n.name for n in self.store.networks()}
        if "bridge" not in names:
            bridge = f"{self.prefix}0"
            self.store.save_network(NetworkRecord(
                id=_new_id(), name="bridge", driver="bridge", created=_now(), bridge=bridge,
                builtin=True, options={
                    "com.docker.network.bridge.default_bridge": "true",
                    ICC_OPTION: "true",
                    MASQUERADE_OPTION: "true",
                    HOST_BINDING_OPTION: "0.0.0.0",
                    NAME_OPTION: bridge,
                    MTU_OPTION: "1500"}))
        if "host" not in names:
            self.store.save_network(NetworkRecord(
                id=_new_id(), name="host", driver="host", created=_now(), builtin=True))
        if "none" not in names:
            self.store.save_network(NetworkRecord(
                id=_new_id(), name="none", driver="null", created=_now(), builtin=True))

    async def _bring_up_bridge(self, network: NetworkRecord) -> None:
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
            await asyncio.to_thread(kernel.delete_link, network.bridge)
            raise
        self.store.save_network(network)

    def _subnet_taken_elsewhere(self, network: NetworkRecord) -> bool:
        """A re-adopted default bridge whose subnet another engine took meanwhile."""
        if not network.builtin or kernel.link_exists(network.bridge):
            return False
        subnet = ipaddress.IPv4Network(network.subnet)
        return any(subnet.overlaps(other) for other in kernel.host_networks())

    async def _readopt_sandboxes(self) -> None:
        for sandbox in self.store.sandboxes():
            alive = not sandbox.owns_netns or Path(sandbox.netns_path).exists()
            if not alive:
                await self._teardown(sandbox.container_id, sandbox)
                continue
            if sandbox.mode == "cni":
                await self.pods.check(sandbox)
            for endpoint in self.store.endpoints(container_id=sandbox.container_id):
                if endpoint.wired and not await asyncio.to_thread(
                        kernel.link_exists, endpoint.host_ifname):
                    self._release(endpoint)
            socks = []
            for port in sandbox.ports:
                request = requests_for([(f"{port['container_port']}/{port['proto']}",
                                         port["host_ip"], str(port["host_port"]))], False, [])
                try:
                    socks.append(reserve(request[0], sandbox.container_id[:12])[1])
                except BerthError as exc:
                    log.warning("cannot re-reserve port of %s: %s", sandbox.container_id, exc)
            self._port_sockets[sandbox.container_id] = socks

    # -- networks -------------------------------------------------------

    def find(self, ref: str) -> NetworkRecord:
        """By full ID, then name, then unique ID prefix, as Docker looks up.

        "default" is the docker CLI's name for the default network mode.
        """
        ref = "bridge" if ref == "default" else ref
        networks = self.store.networks()
        for network in networks:
            if network.id == ref:
                return network
        for network in networks:
            if network.name == ref:
                return network
        matches = [n for n in networks if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches found "
                                  f"based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    async def create(self, spec: NetworkSpec) -> NetworkRecord:
        if not spec.name:
            raise InvalidArgument("network name is required")
        driver = spec.driver or "bridge"
        if driver in ("host", "null"):
            raise PermissionDenied(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NotFound(f'plugin "{driver}" not found')
        async with self._lock:
            if any(n.name == spec.name for n in self.store.networks()):
                raise AlreadyExists(f"network with name {spec.name} already exists")
            network = self._new_bridge_record(spec)
            created = False
            try:
                await self._bring_up_bridge(network)
                created = True
                await self._apply_firewall()
                await self.dns.start(network.id, network.gateway)
            except BaseException:
                self.dns.stop(network.id)
                await asyncio.to_thread(kernel.delete_link, network.bridge)
                if created:
                    self.store.delete_network(network.id)
                    await self._apply_firewall()
                raise
            self.events.publish("create", network.id, {"name": network.name, "type": driver})
            self._refresh_metrics()
            return network

    def _new_bridge_record(self, spec: NetworkSpec) -> NetworkRecord:
        network_id = _new_id()
        options = dict(spec.options)
        mtu = options.get(MTU_OPTION, "")
        if mtu and not mtu.isdigit():
            raise InvalidArgument(f"invalid MTU number: {mtu}")
        bridge = options.get(NAME_OPTION) or (
            f"{self.prefix}-" + network_id[:14 - len(self.prefix)])
        if len(bridge) > 15:
            raise InvalidArgument(f"bridge name {bridge} is longer than 15 characters")
        record = NetworkRecord(
            id=network_id, name=spec.name, driver="bridge", created=_now(), bridge=bridge,
            internal=spec.internal, attachable=spec.attachable, enable_ipv6=spec.enable_ipv6,
            mtu=int(mtu or 0), icc=_bool_option(options.get(ICC_OPTION, "true")),
            options=options, labels=dict(spec.labels), ipam_options=dict(spec.ipam_options),
            aux_addresses=dict(spec.aux_addresses))
        if spec.subnet:
            subnet = ipam.parse_subnet(spec.subnet)
            ours = [ipaddress.IPv4Network(n.subnet) for n in self.store.networks() if n.subnet]
            ipam.check_user_pool(subnet, spec.gateway, spec.ip_range, ours)
            record.subnet, record.user_subnet = str(subnet), True
            record.gateway = str(ipam.parse_address(spec.gateway)) if spec.gateway else \
                ipam.default_gateway(subnet)
            record.ip_range = str(ipam.parse_subnet(spec.ip_range)) if spec.ip_range else ""
        elif spec.gateway or spec.ip_range:
            raise InvalidArgument("invalid network config:\na gateway or ip-range needs "
                                  "a subnet")
        if spec.enable_ipv6:
            self._assign_ipv6(record, spec)
        return record

    def _assign_ipv6(self, record: NetworkRecord, spec: NetworkSpec) -> None:
        """The user's IPv6 subnet, else a random unique local /64."""
        ours = [ipaddress.IPv6Network(n.subnet6) for n in self.store.networks() if n.subnet6]
        if spec.subnet6:
            subnet6 = ipam.parse_subnet6(spec.subnet6)
            ipam.check_user_pool6(subnet6, spec.gateway6, ours)
        else:
            subnet6 = ipam.random_ula()
        record.subnet6 = str(subnet6)
        record.gateway6 = spec.gateway6.split("/")[0] if spec.gateway6 else \
            str(subnet6.network_address + 1)

    async def remove(self, ref: str) -> None:
        async with self._lock:
            network = self.find(ref)
            if network.builtin:
                raise PermissionDenied(f"{network.name} is a pre-defined network and cannot "
                                       f"be removed")
            if self._wired(network.id):
                raise PermissionDenied(f"error while removing network: network {network.name} "
                                       f"id {network.id} has active endpoints")
            await self._delete(network)

    async def _delete(self, network: NetworkRecord) -> None:
        self.dns.stop(network.id)
        await asyncio.to_thread(kernel.delete_link, network.bridge)
        self.store.delete_network(network.id)
        await self._apply_firewall()
        self.events.publish("destroy", network.id, {"name": network.name,
                                                    "type": network.driver})
        self._refresh_metrics()

    def list(self, filters: dict[str, list[str]]) -> list[NetworkRecord]:
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        return [n for n in self.store.networks() if self._matches(n, filters)]

    def _matches(self, network: NetworkRecord, filters: dict[str, list[str]]) -> bool:
        tests: dict[str, Callable[[str], bool]] = {
            "name": lambda v: _name_matches(network.name, v),
            "id": lambda v: network.id.startswith(v),
            "label": lambda v: _label_matches(network.labels, v),
            "driver": lambda v: network.driver == v,
            "scope": lambda v: v == "local",
            "type": lambda v: (v == "builtin") == network.builtin,
            "dangling": lambda v: _bool_option(v) == (
                not network.builtin and not self._wired(network.id)),
        }
        for key, values in filters.items():
            if key == "type" and any(v not in ("custom", "builtin") for v in values):
                raise InvalidArgument(f"invalid filter: 'type'='{values[0]}'")
            if values and not any(tests[key](v) for v in values):
                return False
        return True

    async def prune(self, filters: dict[str, list[str]]) -> list[str]:
        for key in filters:
            if key not in PRUNE_FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        until = [_parse_until(v) for v in filters.get("until", [])]
        deleted = []
        async with self._lock:
            for network in self.store.networks():
                if network.builtin or self._wired(network.id):
                    continue
                labels = network.labels
                if not all(_label_matches(labels, v) for v in filters.get("label", [])):
                    continue
                if any(_label_matches(labels, v) for v in filters.get("label!", [])):
                    continue
                created = datetime.fromisoformat(network.created.replace("Z", "+00:00"))
                if until and not all(created < limit for limit in until):
                    continue
                await self._delete(network)
                deleted.append(network.name)
        return deleted

    def containers_of(self, network: NetworkRecord) -> list[EndpointRecord]:
        return [e for e in self.store.endpoints(network_id=network.id) if e.wired]

    def _wired(self, network_id: str) -> bool:
        return any(e.wired for e in self.store.endpoints(network_id=network_id))

    # -- connect and disconnect -------------------------------------------

    async def connect(self, container_id: str, container_name: str,
                      spec: EndpointSpec) -> EndpointView | None:
        async with self._lock:
            network = self.find(spec.network)
            sandbox = self.store.sandbox(container_id)
            self._check_connectable(network, sandbox)
            existing = self.store.endpoint(network.id, container_id)
            if existing is not None and existing.state == "connected":
                raise PermissionDenied(f"endpoint with name {container_name} already exists "
                                       f"in network {network.name}")
            self._check_endpoint_request(network, spec)
            endpoint = self._endpoint_record(network, container_id, container_name, spec)
            self.store.save_endpoint(endpoint)
            if sandbox is None:
                return None
            try:
                await self._wire(sandbox, network, endpoint)
                await self._apply_firewall()
            except BaseException:
                await self._unwire(network, endpoint, announce=False)
                if existing is None:
                    self.store.delete_endpoint(network.id, container_id)
                else:
                    self.store.save_endpoint(existing)
                await self._apply_firewall()
                raise
            self._refresh_metrics()
            return EndpointView(network, endpoint)

    def _check_connectable(self, network: NetworkRecord, sandbox: SandboxRecord | None) -> None:
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

    def _check_endpoint_request(self, network: NetworkRecord, spec: EndpointSpec) -> None:
        if spec.aliases and not network.is_user_bridge:
            raise InvalidArgument("network-scoped alias is supported only for containers in "
                                  "user defined networks")
        if spec.mac_address and not ipam.valid_mac(spec.mac_address):
            raise InvalidArgument(f"invalid MAC address: {spec.mac_address}")
        self._check_static_ip(network, spec.ipv4_address)

    def _check_static_ip(self, network: NetworkRecord, address: str) -> None:
        if not address:
            return
        if not network.is_user_bridge:
            raise InvalidArgument("user specified IP address is supported on user defined "
                                  "networks only")
        if not network.user_subnet:
            raise InvalidArgument("user specified IP address is supported only when "
                                  "connecting to networks with user configured subnets")
        ipam.claim_static(ipaddress.IPv4Network(network.subnet), address, set())

    def _endpoint_record(self, network: NetworkRecord, container_id: str, name: str,
                         spec: EndpointSpec) -> EndpointRecord:
        return EndpointRecord(
            network_id=network.id, container_id=container_id, container_name=name,
            endpoint_id=_new_id(), ipv4_requested=spec.ipv4_address,
            mac_requested=spec.mac_address, aliases=list(dict.fromkeys(spec.aliases)),
            links=list(spec.links))

    async def disconnect(self, container_id: str, ref: str, force: bool) -> None:
        async with self._lock:
            network = self.find(ref)
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
                    endpoint_id=_new_id(), state="disconnected"))
                return
            if endpoint is None or endpoint.state != "connected":
                if force:
                    return
                raise Internal(f"container {container_id} is not connected to network "
                                       f"{network.name}")
            if endpoint.wired:
                await self._unwire(network, endpoint)
            endpoint.state = "disconnected"
            self.store.save_endpoint(endpoint)
            if sandbox is not None and sandbox.netns_path:
                await self._restore_default_route(sandbox)
            await self._apply_firewall()
            self._refresh_metrics()

    # -- sandboxes ----------------------------------------------------------

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxView:
        async with self._lock:
            if self.store.sandbox(spec.container_id) is not None:
                await self._teardown(spec.container_id)
            mode = "bridge" if spec.network_mode in BRIDGE_MODES else spec.network_mode
            sandbox = SandboxRecord(container_id=spec.container_id,
                                    container_name=spec.container_name, mode=mode,
                                    hostname=spec.hostname)
            try:
                if mode == "host":
                    sandbox.hosts, sandbox.resolv_conf = files.host_files()
                elif mode.startswith("container:"):
                    self._share_netns(sandbox, spec)
                elif mode == "cni":
                    await self.pods.attach(sandbox, spec)
                else:
                    await self._build_sandbox(sandbox, spec)
                self.store.save_sandbox(sandbox)
            except BaseException:
                await self._teardown(spec.container_id, sandbox)
                raise
            self._refresh_metrics()
            return self._view(sandbox)

    def _share_netns(self, sandbox: SandboxRecord, spec: SandboxSpec) -> None:
        if not spec.container_netns_path:
            raise InvalidArgument("container_netns_path is required for container: mode")
        sandbox.netns_path = spec.container_netns_path
        other = self._sandbox_by_ref(sandbox.mode.removeprefix("container:"))
        if other is not None:
            sandbox.hosts, sandbox.resolv_conf = other.hosts, other.resolv_conf
        else:
            sandbox.hosts = files.hosts_file(spec.hostname, spec.domainname, "", [])
            sandbox.resolv_conf = self._default_resolv_conf(spec)

    def _sandbox_by_ref(self, ref: str) -> SandboxRecord | None:
        for sandbox in self.store.sandboxes():
            if ref and (sandbox.container_id.startswith(ref) or sandbox.container_name == ref):
                return sandbox
        return None

    async def _build_sandbox(self, sandbox: SandboxRecord, spec: SandboxSpec) -> None:
        networks = [] if sandbox.mode == "none" else self._sandbox_networks(sandbox.mode, spec)
        path = self.netns_dir / spec.container_id
        sandbox.netns_path, sandbox.owns_netns = str(path), True
        sandbox.dns = list(spec.dns)
        self.store.save_sandbox(sandbox)
        await asyncio.to_thread(kernel.create_netns, path)
        for network, endpoint in networks:
            await self._wire(sandbox, network, endpoint)
        sandbox.ports = await self._publish(sandbox, spec) if networks else []
        self.store.save_sandbox(sandbox)
        await self._apply_firewall()
        await self._forget_udp_flows(sandbox)
        first = self._views(sandbox.container_id)
        address = first[0].record.ip if first else ""
        extra = [self._extra_host(entry, first) for entry in spec.extra_hosts]
        sandbox.hosts = files.hosts_file(spec.hostname, spec.domainname, address, extra)
        user_nets = [v for v in first
                     if v.network.is_user_bridge and self.dns.serving(v.network.id)]
        if user_nets:
            host = files.read_host_resolv_conf()
            sandbox.resolv_conf = files.resolv_conf(
                [user_nets[0].network.gateway], spec.dns_search or host.search,
                spec.dns_options or host.options)
        else:
            sandbox.resolv_conf = self._default_resolv_conf(spec)

    def _sandbox_networks(self, mode: str, spec: SandboxSpec
                          ) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """The container's endpoints: stored choices win over the create-time list."""
        requested = list(spec.endpoints)
        primary = "bridge" if mode == "bridge" else mode
        named = {self.find(e.network).id for e in requested}
        primary_id = self.find(primary).id
        if primary_id not in named:
            requested.insert(0, EndpointSpec(network=primary))
        requested.sort(key=lambda e: self.find(e.network).id != primary_id)
        for request in requested:
            network = self.find(request.network)
            self._check_connectable(network, None)
            if self.store.endpoint(network.id, spec.container_id) is None:
                self._check_endpoint_request(network, request)
                self.store.save_endpoint(self._endpoint_record(
                    network, spec.container_id, spec.container_name, request))
        result = []
        by_id = {n.id: n for n in self.store.networks()}
        for endpoint in self.store.endpoints(container_id=spec.container_id):
            if endpoint.state != "connected":
                continue
            endpoint.container_name = spec.container_name or endpoint.container_name
            result.append((by_id[endpoint.network_id], endpoint))
        return result

    def _extra_host(self, entry: str, views: list[EndpointView]) -> tuple[str, str]:
        name, sep, address = entry.partition(":")
        if not sep:
            raise InvalidArgument(f"invalid extra host: {entry}")
        if address == "host-gateway":
            address = views[0].network.gateway if views else "127.0.0.1"
        return name, address

    def _default_resolv_conf(self, spec: SandboxSpec) -> str:
        host = files.read_host_resolv_conf()
        return files.resolv_conf(spec.dns or files.container_nameservers(host),
                                 spec.dns_search or host.search,
                                 spec.dns_options or host.options)

    async def _publish(self, sandbox: SandboxRecord, spec: SandboxSpec) -> list[dict]:
        target = self._port_target(sandbox.container_id)
        networks = [v.network for v in self._views(sandbox.container_id)
                    if target and v.record.ip == target]
        default_ip = networks[0].options.get(HOST_BINDING_OPTION) if networks else ""
        requests = requests_for(spec.port_mappings, spec.publish_all_ports, spec.exposed_ports,
                                default_ip or "0.0.0.0")
        socks = self._port_sockets.setdefault(sandbox.container_id, [])
        published = []
        for request in requests:
            port, sock = reserve(request, f"{target}:{request.container_port}")
            socks.append(sock)
            published.append({"container_port": port.container_port, "proto": port.proto,
                              "host_ip": port.host_ip, "host_port": port.host_port})
        return published

    def _port_target(self, container_id: str) -> str:
        """The address published ports reach: the first endpoint with a way out."""
        for view in self._views(container_id):
            if view.record.ip and not view.network.internal:
                return view.record.ip
        return ""

    async def destroy_sandbox(self, container_id: str) -> None:
        async with self._lock:
            await self._teardown(container_id)
            self._refresh_metrics()

    async def forget_container(self, container_id: str) -> None:
        async with self._lock:
            await self._teardown(container_id)
            self.store.forget_container(container_id)
            self._refresh_metrics()

    async def rename_container(self, container_id: str, new_name: str) -> None:
        async with self._lock:
            for endpoint in self.store.endpoints(container_id=container_id):
                endpoint.container_name = new_name
                self.store.save_endpoint(endpoint)
            sandbox = self.store.sandbox(container_id)
            if sandbox is not None:
                sandbox.container_name = new_name
                self.store.save_sandbox(sandbox)

    async def _teardown(self, container_id: str, sandbox: SandboxRecord | None = None) -> None:
        """Undo a sandbox, whole or half-built: veths, IPs, ports, netns file."""
        sandbox = sandbox or self.store.sandbox(container_id)
        if sandbox is not None and sandbox.mode == "cni":
            await self.pods.detach(sandbox)
        by_id = {n.id: n for n in self.store.networks()}
        for endpoint in self.store.endpoints(container_id=container_id):
            if endpoint.wired and endpoint.network_id in by_id:
                await self._unwire(by_id[endpoint.network_id], endpoint)
        for sock in self._port_sockets.pop(container_id, []):
            sock.close()
        if sandbox is not None and sandbox.owns_netns:
            await asyncio.to_thread(kernel.remove_netns, Path(sandbox.netns_path))
        self.store.delete_sandbox(container_id)
        await self._apply_firewall()
        if sandbox is not None:
            await self._forget_udp_flows(sandbox)

    @staticmethod
    async def _forget_udp_flows(sandbox: SandboxRecord) -> None:
        udp = {p["host_port"] for p in sandbox.ports if p["proto"] == "udp"}
        if udp:
            await asyncio.to_thread(kernel.forget_udp_flows, udp)

    def get_sandbox(self, container_id: str) -> SandboxView:
        sandbox = self.store.sandbox(container_id)
        if sandbox is None:
            return SandboxView(container_id=container_id,
                               endpoints=[v for v in self._views(container_id)
                                          if v.record.state == "connected"])
        return self._view(sandbox)

    def _view(self, sandbox: SandboxRecord) -> SandboxView:
        ports = [Published(p["container_port"], p["proto"], p["host_ip"], p["host_port"])
                 for p in sandbox.ports]
        views = [v for v in self._views(sandbox.container_id) if v.record.state == "connected"]
        if sandbox.mode in ("host", "none"):
            # Docker lists these containers on the host/none network, without addresses.
            network = self.find(sandbox.mode)
            views = [EndpointView(network, EndpointRecord(
                network_id=network.id, container_id=sandbox.container_id,
                endpoint_id=hashlib.sha256((network.id + sandbox.container_id).encode())
                .hexdigest(), container_name=sandbox.container_name))]
        if sandbox.mode == "cni":
            views = [EndpointView(n, e) for n, e in self.pods.endpoints(sandbox)]
        return SandboxView(container_id=sandbox.container_id, netns_path=sandbox.netns_path,
                           network_mode=sandbox.mode, endpoints=views, ports=ports,
                           hosts=sandbox.hosts, resolv_conf=sandbox.resolv_conf)

    def _views(self, container_id: str) -> list[EndpointView]:
        by_id = {n.id: n for n in self.store.networks()}
        return [EndpointView(by_id[e.network_id], e)
                for e in self.store.endpoints(container_id=container_id)
                if e.network_id in by_id]

    # -- wiring -------------------------------------------------------------

    async def _wire(self, sandbox: SandboxRecord, network: NetworkRecord,
                    endpoint: EndpointRecord) -> None:
        subnet = ipaddress.IPv4Network(network.subnet)
        reserved = self._reserved(network)
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
                        for v in self._views(endpoint.container_id)
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
            self._release(endpoint)
            raise Internal(f"failed to set up endpoint on network {network.name}: "
                           f"{exc}") from exc
        self.events.publish("connect", network.id, {
            "container": endpoint.container_id, "name": network.name, "type": network.driver})

    async def _unwire(self, network: NetworkRecord, endpoint: EndpointRecord,
                      announce: bool = True) -> None:
        if endpoint.host_ifname:
            await asyncio.to_thread(kernel.delete_link, endpoint.host_ifname)
        was_wired = endpoint.wired
        self._release(endpoint)
        if announce and was_wired:
            self.events.publish("disconnect", network.id, {
                "container": endpoint.container_id, "name": network.name,
                "type": network.driver})

    async def _restore_default_route(self, sandbox: SandboxRecord) -> None:
        """After a disconnect, route through the first network left with a way out."""
        for view in self._views(sandbox.container_id):
            if view.record.wired and not view.network.internal:
                await asyncio.to_thread(kernel.set_default_route, sandbox.netns_path,
                                        view.network.gateway,
                                        view.network.gateway6 if view.record.ip6 else "")
                return

    def _release(self, endpoint: EndpointRecord) -> None:
        endpoint.ip = endpoint.ip6 = endpoint.mac = endpoint.ifname = endpoint.host_ifname = ""
        if self.store.endpoint(endpoint.network_id, endpoint.container_id) is not None:
            self.store.save_endpoint(endpoint)

    def _reserved(self, network: NetworkRecord) -> set[str]:
        taken = {e.ip for e in self.store.endpoints(network_id=network.id) if e.ip}
        return taken | {network.gateway} | set(network.aux_addresses.values())

    async def _apply_firewall(self) -> None:
        bridges = []
        for network in self.store.networks():
            if network.driver != "bridge" or not network.subnet:
                continue
            veths = tuple(e.host_ifname for e in self.store.endpoints(network_id=network.id)
                          if e.wired)
            bridges.append(BridgeRules(
                network.bridge, network.subnet, network.internal, network.icc, veths,
                network.subnet6, _bool_option(network.options.get(MASQUERADE_OPTION, "true"))))
        rules = []
        for sandbox in self.store.sandboxes():
            target = self._port_target(sandbox.container_id)
            if not target:
                continue
            for port in sandbox.ports:
                rules.append(PortRule(port["proto"], port["host_ip"], port["host_port"],
                                      target, port["container_port"]))
        await self.firewall.apply(bridges, rules)

    # -- DNS ----------------------------------------------------------------

    def _visible_endpoints(self, asker: str) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """Wired endpoints on the user networks the asking container is on."""
        networks = {n.id: n for n in self.store.networks() if n.is_user_bridge}
        mine = [e for e in self.store.endpoints()
                if asker in (e.ip, e.ip6) and e.network_id in networks]
        if not mine:
            return []
        shared = {e.network_id for e in self.store.endpoints(container_id=mine[0].container_id)
                  if e.wired} & networks.keys()
        return [(networks[network_id], endpoint) for network_id in shared
                for endpoint in self.store.endpoints(network_id=network_id) if endpoint.wired]

    def _dns_lookup(self, asker: str, name: str) -> list[tuple[str, str]] | None:
        found = []
        for _, endpoint in self._visible_endpoints(asker):
            names = {endpoint.container_name.lower(), *map(str.lower, endpoint.aliases),
                     endpoint.container_id[:12]}
            if name in names:
                found.append((endpoint.ip, endpoint.ip6))
        return found or None

    def _dns_reverse(self, asker: str, address: str) -> str | None:
        for network, endpoint in self._visible_endpoints(asker):
            if endpoint.ip == address:
                return f"{endpoint.container_name}.{network.name}"
        return None

    def _dns_upstreams(self, asker: str) -> list[str]:
        """Where to forward: none for a container only on internal networks (as
        Docker: they have no way out), else its --dns servers or the host's."""
        for endpoint in self.store.endpoints():
            if asker in (endpoint.ip, endpoint.ip6):
                views = [v for v in self._views(endpoint.container_id) if v.record.wired]
                if all(v.network.internal for v in views):
                    return []
                sandbox = self.store.sandbox(endpoint.container_id)
                if sandbox is not None and sandbox.dns:
                    return sandbox.dns
                break
        return files.read_host_resolv_conf().nameservers or files.FALLBACK_NAMESERVERS

    # -- metrics ------------------------------------------------------------

    def _refresh_metrics(self) -> None:
        networks = self.store.networks()
        NETWORKS.set(len(networks))
        ENDPOINTS.set(sum(1 for e in self.store.endpoints() if e.wired))
        FREE_ADDRESSES.clear()
        for network in networks:
            if network.subnet:
                FREE_ADDRESSES.labels(network.name).set(ipam.free_count(
                    ipaddress.IPv4Network(network.subnet), network.ip_range,
                    self._reserved(network)))

    def counts(self) -> dict[str, int]:
        return {"networks": len(self.store.networks())}
