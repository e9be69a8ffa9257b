"""Sandboxes: a container's network namespace with its endpoints wired, its
published ports (host ports held by bound sockets) and its /etc/hosts and
/etc/resolv.conf; their teardown, and their re-adoption when the service
starts. Callers hold the manager's lock for changes."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from services.common import etc_hosts
from services.common.errors import BerthError, InvalidArgument
from services.network import endpoints, files
from services.network.dns import RESOLVER_ADDRESS, DnsListeners
from services.network.networks import Networks
from services.network.pods import PodNetworks
from services.network.ports import Published, requests_for, reserve
from services.network.specs import (
    HOST_BINDING_OPTION,
    EndpointSpec,
    EndpointView,
    SandboxSpec,
    SandboxView,
)
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord
from services.network.wiring import KernelWiring

log = logging.getLogger("berth.network")

BRIDGE_MODES = ("", "default", "bridge")


def _extra_host(entry: str, views: list[EndpointView]) -> tuple[str, str]:
    name, sep, address = entry.partition(":")
    if not sep:
        raise InvalidArgument(f"invalid extra host: {entry}")
    if address == "host-gateway":
        address = views[0].network.gateway if views else "127.0.0.1"
    return name, address


def _addresses(endpoint: EndpointRecord) -> list[str]:
    return [address for address in (endpoint.ip, endpoint.ip6) if address]


def _default_resolv_conf(spec: SandboxSpec) -> str:
    host = files.read_host_resolv_conf()
    return files.resolv_conf(spec.dns or files.container_nameservers(host),
                             spec.dns_search or host.search,
                             spec.dns_options or host.options)


def _has_resolver(sandbox: SandboxRecord) -> bool:
    """Whether the sandbox uses the embedded resolver (kept once started, as Docker)."""
    return RESOLVER_ADDRESS in files.parse_resolv_conf(sandbox.resolv_conf).nameservers


class Sandboxes:
    def __init__(self, netns_dir: Path, store: NetworkStore, networks: Networks,
                 wiring: KernelWiring, dns: DnsListeners, pods: PodNetworks) -> None:
        self.netns_dir = netns_dir
        self.store = store
        self.networks = networks
        self.wiring = wiring
        self.dns = dns
        self.pods = pods
        self._port_sockets: dict[str, list[socket.socket]] = {}

    # -- service start and stop ---------------------------------------------

    async def readopt(self) -> None:
        """Keep the sandboxes whose netns survived, with their ports; forget the rest."""
        for sandbox in self.store.sandboxes():
            alive = not sandbox.owns_netns or Path(sandbox.netns_path).exists()
            if not alive:
                await self.teardown(sandbox.container_id, sandbox)
                continue
            if sandbox.mode == "cni":
                await self.pods.check(sandbox)
            await self.wiring.release_vanished(sandbox.container_id)
            socks = []
            for port in sandbox.ports:
                request = requests_for([(f"{port['container_port']}/{port['proto']}",
                                         port["host_ip"], str(port["host_port"]))], False, [])
                try:
                    socks.append(reserve(request[0], sandbox.container_id[:12])[1])
                except BerthError as exc:
                    log.warning("cannot re-reserve port of %s: %s", sandbox.container_id, exc)
            self._port_sockets[sandbox.container_id] = socks
            if _has_resolver(sandbox):
                await self._restart_resolver(sandbox)

    async def _restart_resolver(self, sandbox: SandboxRecord) -> None:
        try:
            await self.dns.start(sandbox.container_id, sandbox.netns_path)
        except (BerthError, OSError) as exc:
            log.warning("no DNS for container %s: %s", sandbox.container_id[:12], exc)

    def close_ports(self) -> None:
        for socks in self._port_sockets.values():
            for sock in socks:
                sock.close()
        self._port_sockets.clear()

    async def release_host(self) -> None:
        """Drop the firewall and the netns directory when no sandbox is left."""
        if not self.store.sandboxes():
            await self.wiring.remove_firewall()
            await self.wiring.release_netns_dir(self.netns_dir)

    # -- create ---------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> SandboxView:
        """A new sandbox (an old one of the container is torn down first);
        undone whole on failure."""
        if self.store.sandbox(spec.container_id) is not None:
            await self.teardown(spec.container_id)
        mode = "bridge" if spec.network_mode in BRIDGE_MODES else spec.network_mode
        sandbox = SandboxRecord(container_id=spec.container_id,
                                container_name=spec.container_name, mode=mode,
                                hostname=spec.hostname, domainname=spec.domainname,
                                owner=spec.owner)
        try:
            if mode == "host":
                sandbox.hosts, sandbox.resolv_conf = files.host_files()
            elif mode.startswith("container:"):
                self._share_netns(sandbox, spec)
            elif mode == "cni":
                await self.pods.attach(sandbox, spec)
            else:
                await self._build(sandbox, spec)
            self.store.save_sandbox(sandbox)
        except BaseException:
            await self.teardown(spec.container_id, sandbox)
            raise
        return self._view(sandbox)

    def _share_netns(self, sandbox: SandboxRecord, spec: SandboxSpec) -> None:
        if not spec.container_netns_path:
            raise InvalidArgument("container_netns_path is required for container: mode")
        sandbox.netns_path = spec.container_netns_path
        other = self._by_ref(sandbox.mode.removeprefix("container:"))
        if other is not None:
            sandbox.hosts, sandbox.resolv_conf = other.hosts, other.resolv_conf
        else:
            sandbox.hosts = files.hosts_file(spec.hostname, spec.domainname, [], [])
            sandbox.resolv_conf = _default_resolv_conf(spec)

    def _by_ref(self, ref: str) -> SandboxRecord | None:
        for sandbox in self.store.sandboxes():
            if ref and (sandbox.container_id.startswith(ref) or sandbox.container_name == ref):
                return sandbox
        return None

    async def _build(self, sandbox: SandboxRecord, spec: SandboxSpec) -> None:
        networks = [] if sandbox.mode == "none" else self._networks_of(sandbox.mode, spec)
        path = self.netns_dir / spec.container_id
        sandbox.netns_path, sandbox.owns_netns = str(path), True
        sandbox.dns = list(spec.dns)
        self.store.save_sandbox(sandbox)
        await self.wiring.create_netns(path)
        for network, endpoint in networks:
            await self.wiring.wire(sandbox, network, endpoint)
        if networks:
            await self.wiring.update_default_routes(sandbox)
        sandbox.ports = await self._publish(sandbox, spec) if networks else []
        self.store.save_sandbox(sandbox)
        await self.wiring.apply_firewall()
        await self.wiring.forget_udp_flows(sandbox)
        joined = self.wiring.views(sandbox.container_id)
        extra = [_extra_host(entry, joined) for entry in spec.extra_hosts]
        addresses = [a for view in joined for a in _addresses(view.record)]
        sandbox.hosts = files.hosts_file(spec.hostname, spec.domainname, addresses, extra)
        if any(v.network.is_user_bridge for v in joined):
            await self.dns.start(sandbox.container_id, sandbox.netns_path)
            host = files.read_host_resolv_conf()
            options = spec.dns_options or host.options
            sandbox.ndots_set = files.names_ndots(options)
            sandbox.resolv_conf = files.embedded_resolver_conf(
                RESOLVER_ADDRESS, spec.dns_search or host.search, options)
        else:
            sandbox.resolv_conf = _default_resolv_conf(spec)

    async def use_embedded_resolver(self, container_id: str) -> str:
        """As Docker on a first connect to a user network: start the sandbox's
        resolver and point its resolv.conf there, keeping search and options
        (the servers it named stay reachable: they are the host's or --dns).
        A resolver that cannot start leaves the connect done, as in Docker.
        The resolv.conf replaced, empty when it stays."""
        sandbox = self.store.sandbox(container_id)
        if sandbox is None or not sandbox.owns_netns or _has_resolver(sandbox):
            return ""
        try:
            await self.dns.start(container_id, sandbox.netns_path)
        except (BerthError, OSError) as exc:
            log.warning("no DNS for container %s: %s", container_id[:12], exc)
            return ""
        replaced = sandbox.resolv_conf
        current = files.parse_resolv_conf(replaced)
        sandbox.ndots_set = files.names_ndots(current.options)
        sandbox.resolv_conf = files.embedded_resolver_conf(
            RESOLVER_ADDRESS, current.search, current.options)
        self.store.save_sandbox(sandbox)
        return replaced

    def add_host_records(self, container_id: str, endpoint: EndpointRecord) -> list[str]:
        """A live connect names the container at its new addresses in /etc/hosts;
        the lines added."""
        return self._edit_hosts(container_id, endpoint, etc_hosts.append_records)

    def remove_host_records(self, container_id: str, endpoint: EndpointRecord) -> list[str]:
        """A live disconnect drops the lines of the addresses the endpoint had;
        the lines removed."""
        return self._edit_hosts(container_id, endpoint, etc_hosts.delete_records)

    def _edit_hosts(self, container_id: str, endpoint: EndpointRecord,
                    edit: Callable[[str, list[str]], str]) -> list[str]:
        sandbox = self.store.sandbox(container_id)
        if sandbox is None or not sandbox.owns_netns or sandbox.mode == "cni":
            return []
        records = files.host_records(sandbox.hostname, sandbox.domainname,
                                     _addresses(endpoint))
        sandbox.hosts = edit(sandbox.hosts, records)
        self.store.save_sandbox(sandbox)
        return records

    def _requested(self, mode: str, spec: SandboxSpec
                   ) -> list[tuple[NetworkRecord, EndpointSpec]]:
        """The create-time list, the network of the network mode first."""
        requested = [(self.networks.find(e.network), e) for e in spec.endpoints]
        primary = self.networks.find(mode)
        if primary.id not in {network.id for network, _ in requested}:
            requested.insert(0, (primary, EndpointSpec(network=mode)))
        requested.sort(key=lambda pair: pair[0].id != primary.id)
        return requested

    def _networks_of(self, mode: str, spec: SandboxSpec
                     ) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """The container's endpoints: stored choices win over the create-time list."""
        for network, request in self._requested(mode, spec):
            endpoints.check_connectable(network, None)
            if self.store.endpoint(network.id, spec.container_id) is None:
                endpoints.check_request(network, request)
                self.store.save_endpoint(endpoints.new_record(
                    network, spec.container_id, spec.container_name, request))
        result = []
        by_id = {n.id: n for n in self.store.networks()}
        for endpoint in self.store.endpoints(container_id=spec.container_id):
            if endpoint.state != "connected":
                continue
            endpoint.container_name = spec.container_name or endpoint.container_name
            result.append((by_id[endpoint.network_id], endpoint))
        return result

    async def _publish(self, sandbox: SandboxRecord, spec: SandboxSpec) -> list[dict]:
        target = self.wiring.port_target(sandbox.container_id)
        networks = [v.network for v in self.wiring.views(sandbox.container_id)
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

    # -- teardown, rename -----------------------------------------------------

    async def teardown(self, container_id: str, sandbox: SandboxRecord | None = None) -> None:
        """Undo a sandbox, whole or half-built: veths, IPs, ports, netns file."""
        sandbox = sandbox or self.store.sandbox(container_id)
        self.dns.stop(container_id)
        if sandbox is not None and sandbox.mode == "cni":
            await self.pods.detach(sandbox)
        by_id = {n.id: n for n in self.store.networks()}
        for endpoint in self.store.endpoints(container_id=container_id):
            if endpoint.wired and endpoint.network_id in by_id:
                await self.wiring.unwire(by_id[endpoint.network_id], endpoint)
        for sock in self._port_sockets.pop(container_id, []):
            sock.close()
        if sandbox is not None and sandbox.owns_netns:
            await self.wiring.remove_netns(Path(sandbox.netns_path))
        self.store.delete_sandbox(container_id)
        await self.wiring.apply_firewall()
        if sandbox is not None:
            await self.wiring.forget_udp_flows(sandbox)

    async def forget_container(self, container_id: str) -> None:
        await self.teardown(container_id)
        self.store.forget_container(container_id)

    def rename_container(self, container_id: str, new_name: str) -> None:
        for endpoint in self.store.endpoints(container_id=container_id):
            endpoint.container_name = new_name
            self.store.save_endpoint(endpoint)
        sandbox = self.store.sandbox(container_id)
        if sandbox is not None:
            sandbox.container_name = new_name
            self.store.save_sandbox(sandbox)

    # -- views ----------------------------------------------------------------

    def plan(self, spec: SandboxSpec) -> SandboxView:
        """The endpoints a container that is not running joins at its next start."""
        mode = "bridge" if spec.network_mode in BRIDGE_MODES else spec.network_mode
        plan = SandboxView(container_id=spec.container_id, network_mode=mode)
        if mode.startswith("container:") or mode == "cni":
            return plan
        if mode in ("host", "none"):
            network = self.networks.find(mode)
            plan.endpoints = [EndpointView(network, EndpointRecord(
                network_id=network.id, container_id=spec.container_id,
                endpoint_id="", container_name=spec.container_name))]
            return plan
        stored = {e.network_id for e in self.store.endpoints(container_id=spec.container_id)}
        for network, request in self._requested(mode, spec):
            if network.id not in stored:
                record = endpoints.new_record(network, spec.container_id,
                                              spec.container_name, request)
                plan.endpoints.append(EndpointView(network, record))
        plan.endpoints += [v for v in self.wiring.views(spec.container_id)
                           if v.record.state == "connected"]
        return plan

    def get(self, container_id: str) -> SandboxView:
        sandbox = self.store.sandbox(container_id)
        if sandbox is None:
            return SandboxView(container_id=container_id,
                               endpoints=[v for v in self.wiring.views(container_id)
                                          if v.record.state == "connected"])
        return self._view(sandbox)

    def _view(self, sandbox: SandboxRecord) -> SandboxView:
        ports = [Published(p["container_port"], p["proto"], p["host_ip"], p["host_port"])
                 for p in sandbox.ports]
        views = [v for v in self.wiring.views(sandbox.container_id)
                 if v.record.state == "connected"]
        if sandbox.mode in ("host", "none"):
            # Docker lists these containers on the host/none network, without addresses.
            network = self.networks.find(sandbox.mode)
            views = [EndpointView(network, EndpointRecord(
                network_id=network.id, container_id=sandbox.container_id,
                endpoint_id=hashlib.sha256((network.id + sandbox.container_id).encode())
                .hexdigest(), container_name=sandbox.container_name))]
        if sandbox.mode == "cni":
            views = [EndpointView(n, e) for n, e in self.pods.endpoints(sandbox)]
        return SandboxView(container_id=sandbox.container_id, netns_path=sandbox.netns_path,
                           network_mode=sandbox.mode, endpoints=views, ports=ports,
                           hosts=sandbox.hosts, resolv_conf=sandbox.resolv_conf)
