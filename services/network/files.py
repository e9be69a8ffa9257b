"""The /etc/hosts and /etc/resolv.conf a container gets, as Docker writes them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from services.common import etc_hosts

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")
FALLBACK_NAMESERVERS = ["8.8.8.8", "8.8.4.4"]

_HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


@dataclass
class HostResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def read_host_resolv_conf() -> HostResolvConf:
    try:
        return parse_resolv_conf(HOST_RESOLV_CONF.read_text())
    except OSError:
        return HostResolvConf()


def parse_resolv_conf(text: str) -> HostResolvConf:
    conf = HostResolvConf()
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver":
            conf.nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            conf.search = words[1:]
        elif words[0] == "options":
            conf.options += words[1:]
    return conf


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def container_nameservers(host: HostResolvConf) -> list[str]:
    """The host's servers a container can reach: loopback ones are the host's own."""
    usable = [s for s in host.nameservers if not _is_loopback(s)]
    return usable or FALLBACK_NAMESERVERS


def resolv_conf(nameservers: list[str], search: list[str], options: list[str]) -> str:
    lines = [f"nameserver {server}" for server in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def names_ndots(options: list[str]) -> bool:
    """Whether resolv.conf options set ndots (any value, as moby's ndotsSet)."""
    return any(option.startswith("ndots:") for option in options)


def embedded_resolver_conf(address: str, search: list[str], options: list[str]) -> str:
    """Docker's resolv.conf for the embedded resolver: its address only, and
    `ndots:0` unless an ndots option was given."""
    if not names_ndots(options):
        options = [*options, "ndots:0"]
    return resolv_conf([address], search, options)


def host_records(hostname: str, domainname: str, addresses: list[str]) -> list[str]:
    """Docker's /etc/hosts lines naming the container at each of its addresses:
    its full name, then the part before the first dot when there is one."""
    if not hostname:
        return []
    names = f"{hostname}.{domainname}" if domainname else hostname
    if "." in names:
        names += " " + names.partition(".")[0]
    return [f"{address}\t{names}" for address in addresses if address]


def hosts_file(hostname: str, domainname: str, addresses: list[str],
               extra_hosts: list[tuple[str, str]]) -> str:
    text = _HOSTS_HEADER
    for name, ip in extra_hosts:
        text += f"{ip}\t{name}\n"
    return etc_hosts.append_records(text, host_records(hostname, domainname, addresses))


def host_files() -> tuple[str, str]:
    """What a host-network container sees: the host's own files."""
    def read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError:
            return ""
    return read(HOST_HOSTS), read(HOST_RESOLV_CONF)
