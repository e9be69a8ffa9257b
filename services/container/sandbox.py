"""A container's network sandbox: asked of the network service at start.

While the network service does not implement sandboxes yet (UNIMPLEMENTED),
a container gets a private network namespace with only loopback (or the
host's with network mode host) and /etc files built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from services.common.errors import Unimplemented
from services.container.peers import Peers

_HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


@dataclass
class SandboxFiles:
    netns_path: str | None          # None: the host's namespace; "": a new empty one
    hosts: str
    resolv_conf: str


def sandbox_request(cid: str, name: str, config: container_pb2.ContainerConfig,
                    host: container_pb2.HostConfig,
                    networking: container_pb2.NetworkingConfig,
                    other_netns: str = "") -> network_pb2.CreateSandboxRequest:
    request = network_pb2.CreateSandboxRequest(
        container_id=cid, container_name=name, hostname=config.hostname,
        domainname=config.domainname, network_mode=host.network_mode or "bridge",
        publish_all_ports=host.publish_all_ports, exposed_ports=config.exposed_ports,
        dns=host.dns, dns_search=host.dns_search, dns_options=host.dns_options,
        extra_hosts=host.extra_hosts, container_netns_path=other_netns)
    for network, settings in networking.endpoints_config.items():
        request.endpoints.append(network_pb2.EndpointRequest(
            network=network, ipv4_address=settings.ipam_config.ipv4_address,
            ipv6_address=settings.ipam_config.ipv6_address, aliases=settings.aliases,
            links=settings.links, mac_address=settings.mac_address,
            driver_opts=settings.driver_opts))
    mode = request.network_mode
    if config.mac_address and not request.endpoints and mode not in ("host", "none") \
            and not mode.startswith("container:"):
        # Before API 1.44 the MAC address came in Config, not in an endpoint.
        request.endpoints.append(network_pb2.EndpointRequest(
            network=mode, mac_address=config.mac_address))
    for port, bindings in host.port_bindings.items():
        for binding in bindings.bindings or [container_pb2.PortBinding()]:
            request.port_mappings.append(network_pb2.PortMapping(
                container_port=port, host_ip=binding.host_ip, host_port=binding.host_port))
    return request


async def create(peers: Peers, request: network_pb2.CreateSandboxRequest) -> SandboxFiles:
    try:
        sandbox = await peers.create_sandbox(request)
    except Unimplemented:
        return _fallback(request)
    netns = sandbox.netns_path or None
    return SandboxFiles(netns, sandbox.hosts or _hosts(request), sandbox.resolv_conf
                        or _resolv_conf(request))


def _fallback(request: network_pb2.CreateSandboxRequest) -> SandboxFiles:
    mode = request.network_mode
    if mode == "host":
        return SandboxFiles(None, Path("/etc/hosts").read_text(), _resolv_conf(request))
    if mode.startswith("container:") and request.container_netns_path:
        return SandboxFiles(request.container_netns_path, _hosts(request),
                            _resolv_conf(request))
    return SandboxFiles("", _hosts(request), _resolv_conf(request))


def _hosts(request: network_pb2.CreateSandboxRequest) -> str:
    lines = [_HOSTS]
    for entry in request.extra_hosts:
        name, _, address = entry.partition(":")
        lines.append(f"{address}\t{name}\n")
    return "".join(lines)


def _resolv_conf(request: network_pb2.CreateSandboxRequest) -> str:
    try:
        host_lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        host_lines = []
    servers = list(request.dns) or [
        line.split()[1] for line in host_lines
        if line.startswith("nameserver") and len(line.split()) > 1
        and not line.split()[1].startswith("127.")]
    search = list(request.dns_search) or [
        word for line in host_lines if line.startswith("search") for word in line.split()[1:]]
    lines = [f"nameserver {server}" for server in servers or ["8.8.8.8", "8.8.4.4"]]
    if search:
        lines.append("search " + " ".join(search))
    if request.dns_options:
        lines.append("options " + " ".join(request.dns_options))
    return "\n".join(lines) + "\n"
