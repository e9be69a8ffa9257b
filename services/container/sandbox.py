"""A container's network sandbox, asked of the network service at start: the
netns to join and the /etc/hosts and /etc/resolv.conf the container gets."""

from __future__ import annotations

from dataclasses import dataclass

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from services.common.netns import NETNS_PATH_MODE
from services.container.peers import OWNER, Peers


@dataclass
class SandboxFiles:
    netns_path: str | None          # None: the host's namespace (network mode host)
    hosts: str
    resolv_conf: str


def sandbox_request(cid: str, name: str, config: container_pb2.ContainerConfig,
                    host: container_pb2.HostConfig,
                    networking: container_pb2.NetworkingConfig,
                    other_netns: str = "") -> network_pb2.CreateSandboxRequest:
    mode = host.network_mode or "bridge"
    if mode.startswith(NETNS_PATH_MODE):
        mode = "container:"
    request = network_pb2.CreateSandboxRequest(
        container_id=cid, container_name=name, hostname=config.hostname, owner=OWNER,
        domainname=config.domainname, network_mode=mode,
        publish_all_ports=host.publish_all_ports, exposed_ports=config.exposed_ports,
        dns=host.dns, dns_search=host.dns_search, dns_options=host.dns_options,
        extra_hosts=host.extra_hosts, container_netns_path=other_netns)
    for network, settings in networking.endpoints_config.items():
        request.endpoints.append(network_pb2.EndpointRequest(
            network=network, ipv4_address=settings.ipam_config.ipv4_address,
            ipv6_address=settings.ipam_config.ipv6_address, aliases=settings.aliases,
            links=settings.links, mac_address=settings.mac_address,
            driver_opts=settings.driver_opts,
            link_local_ips=settings.ipam_config.link_local_ips,
            gw_priority=settings.gw_priority))
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
    sandbox = await peers.create_sandbox(request)
    return SandboxFiles(sandbox.netns_path or None, sandbox.hosts, sandbox.resolv_conf)
