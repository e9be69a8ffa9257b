"""What callers of the network service ask for (specs) and get back (views),
and the Docker option names the service reads from a network's options."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from services.network.pods import PodRef
from services.network.ports import Published
from services.network.store import EndpointRecord, NetworkRecord

MTU_OPTION = "com.docker.network.driver.mtu"
NAME_OPTION = "com.docker.network.bridge.name"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
HOST_BINDING_OPTION = "com.docker.network.bridge.host_binding_ipv4"


def bool_option(value: str) -> bool:
    return value.strip().lower() in ("1", "t", "true", "yes", "on")


def new_id() -> str:
    return os.urandom(32).hex()


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
    scope: str = ""
    ingress: bool = False
    enable_ipv4: bool = True
    config_only: bool = False
    config_from: str = ""

    @property
    def has_own_config(self) -> bool:
        return bool(self.subnet or self.gateway or self.ip_range or self.subnet6
                    or self.gateway6 or self.aux_addresses or self.ipam_options
                    or self.options)


@dataclass
class EndpointSpec:
    network: str
    ipv4_address: str = ""
    ipv6_address: str = ""
    mac_address: str = ""
    aliases: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    link_local_ips: list[str] = field(default_factory=list)
    gw_priority: int = 0
    driver_opts: dict[str, str] = field(default_factory=dict)


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
    owner: str = ""


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
        """Docker's: name, aliases and short ID, each once."""
        if not self.network.is_user_defined:
            return []
        r = self.record
        return list(dict.fromkeys(n for n in (r.container_name, *r.aliases,
                                              r.container_id[:12]) if n))

    @property
    def docker_rank(self) -> tuple[int, bool, int, str]:
        """libnetwork's order of a sandbox's endpoints (its default gateway is the
        first, its embedded DNS answers from the first network knowing a name):
        highest GwPriority, then not internal, then by the gateways it has (both
        families, then IPv6, then IPv4), then network name."""
        gateways = (bool(self.record.ip and self.network.gateway)
                    + 2 * bool(self.record.ip6 and self.network.gateway6))
        return (-self.record.gw_priority, self.network.internal, -gateways, self.network.name)


@dataclass
class Connected:
    """A connect's outcome: the endpoint when the sandbox is live, the lines it
    added to /etc/hosts, and the resolv.conf it replaced when it switched the
    sandbox to the embedded resolver (empty otherwise)."""
    endpoint: EndpointView | None = None
    hosts_added: list[str] = field(default_factory=list)
    resolv_conf_replaced: str = ""


@dataclass
class SandboxView:
    container_id: str
    netns_path: str = ""
    network_mode: str = ""
    endpoints: list[EndpointView] = field(default_factory=list)
    ports: list[Published] = field(default_factory=list)
    hosts: str = ""
    resolv_conf: str = ""
