"""Published ports: which host ports a container gets, held while it runs.

Traffic is forwarded by nftables DNAT (see firewall.py); this module only
reserves each host port with a bound socket, as docker-proxy's listener
does, so that no other program can take it and a port in use is refused
before the container starts. Port 0 binds let the kernel choose random ports.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from services.common.errors import Internal, InvalidArgument


@dataclass(frozen=True)
class PortRequest:
    container_port: int
    proto: str
    host_ip: str          # "0.0.0.0" for every address
    host_ports: tuple[int, int]   # inclusive range; (0, 0) for a random port


@dataclass(frozen=True)
class Published:
    container_port: int
    proto: str
    host_ip: str
    host_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


def parse_port(spec: str) -> tuple[int, str]:
    """ "80/tcp" or "80" -> (80, "tcp")."""
    number, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp") or not number.isdigit():
        raise InvalidArgument(f"invalid port specification: \"{spec}\"")
    if not 0 < int(number) < 65536:
        raise InvalidArgument(f"invalid port specification: \"{spec}\"")
    return int(number), proto


def parse_host_ports(text: str) -> tuple[int, int]:
    if not text:
        return (0, 0)
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError as exc:
        raise InvalidArgument(f"invalid hostPort: {text}") from exc
    if not (0 <= first <= last < 65536):
        raise InvalidArgument(f"invalid hostPort: {text}")
    return (first, last)


def host_ip(text: str) -> str:
    """A published port's host address: an IPv4 address (the nftables rules
    name it, so it is checked before anything renders it)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid host IP address: {text!r}") from None
    if address.version != 4:
        raise InvalidArgument(f"publishing a port on the IPv6 address {text} is not "
                              f"supported by berth")
    return str(address)


def requests_for(mappings: list[tuple[str, str, str]], publish_all: bool,
                 exposed: list[str], default_ip: str = "0.0.0.0") -> list[PortRequest]:
    """PortBindings (container_port, host_ip, host_port) plus -P's exposed ports;
    `default_ip` is for bindings that name no host address."""
    result = []
    bound = set()
    for container_port, address, host_port in mappings:
        number, proto = parse_port(container_port)
        bound.add((number, proto))
        result.append(PortRequest(number, proto, host_ip(address or default_ip),
                                  parse_host_ports(host_port)))
    if publish_all:
        for spec in exposed:
            number, proto = parse_port(spec)
            if (number, proto) not in bound:
                result.append(PortRequest(number, proto, host_ip(default_ip), (0, 0)))
    return result


def _bind(proto: str, host_ip: str, port: int) -> socket.socket:
    """A socket holding the port. A TCP one listens with SO_REUSEADDR, as
    docker-proxy's Go listener: connections that an earlier such listener
    (dockerd's, nginx...) left in TIME-WAIT do not keep the port taken, and
    a listener stays exclusive (the ports table DNATs every connection, so
    none reaches it)."""
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(0)
    except OSError:
        sock.close()
        raise
    return sock


def reserve(request: PortRequest, target: str) -> tuple[Published, socket.socket]:
    """Hold a host port for `request`; `target` (ip:port/proto) names it in errors."""
    if request.proto == "sctp":
        raise InvalidArgument("sctp ports cannot be published by this engine")
    first, last = request.host_ports
    error: OSError | None = None
    for port in range(first, last + 1):
        try:
            sock = _bind(request.proto, request.host_ip, port)
        except OSError as exc:
            error = exc
            continue
        chosen = sock.getsockname()[1]
        return Published(request.container_port, request.proto, request.host_ip, chosen), sock
    reason = "address already in use" if error and error.errno == errno.EADDRINUSE else str(error)
    shown = f"{first}" if first == last else f"{first}-{last}"
    raise Internal(f"failed to bind host port for {request.host_ip}:{shown}:{target}/"
                   f"{request.proto}: {reason}")
