"""IP address management: subnets for new networks, addresses for endpoints.

Subnets come from Docker's default pools (172.17-31.0.0/16, then
192.168.x.0/20). A subnet is free when no host route overlaps it and no
network of this engine uses it; the caller holds the host-wide IPAM lock
(`host_lock`) from picking until the bridge carries the address, so two
engines starting together cannot pick the same one.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.errors import Conflict, InvalidArgument, PermissionDenied

HOST_LOCK = Path("/run/berth-ipam.lock")

IPv4Net = ipaddress.IPv4Network


def default_pools() -> Iterator[IPv4Net]:
    for second in range(17, 32):
        yield ipaddress.IPv4Network(f"172.{second}.0.0/16")
    yield from ipaddress.IPv4Network("192.168.0.0/16").subnets(new_prefix=20)


@contextmanager
def host_lock() -> Iterator[None]:
    """Serialise subnet choice across every berth engine on this host."""
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with HOST_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pick_subnet(in_use: Iterable[IPv4Net]) -> IPv4Net:
    taken = list(in_use)
    for candidate in default_pools():
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise PermissionDenied("could not find an available, non-overlapping IPv4 address pool "
                           "among the defaults to assign to the network")


def parse_subnet(text: str) -> IPv4Net:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise InvalidArgument(f"invalid CIDR address: {text}") from exc


def parse_address(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.split("/")[0])
    except ValueError as exc:
        raise InvalidArgument(f"invalid IP address: {text}") from exc


def check_user_pool(subnet: IPv4Net, gateway: str, ip_range: str,
                    others: Iterable[IPv4Net]) -> None:
    """Docker's checks of a user's IPAM config."""
    if any(subnet.overlaps(other) for other in others):
        raise PermissionDenied("Pool overlaps with other one on this address space")
    if gateway and parse_address(gateway) not in subnet:
        raise InvalidArgument(f"failed to allocate gateway ({gateway}): Requested address is "
                              f"out of range")
    if ip_range and not parse_subnet(ip_range).subnet_of(subnet):
        raise InvalidArgument(f"invalid network config:\ninvalid ip-range {ip_range}: "
                              f"it does not belong to subnet {subnet}")


def default_gateway(subnet: IPv4Net) -> str:
    return str(subnet.network_address + 1)


def allocate(subnet: IPv4Net, ip_range: str, reserved: set[str]) -> str:
    """The lowest free host address of `ip_range` (or the subnet)."""
    pool = parse_subnet(ip_range) if ip_range else subnet
    edges = (subnet.network_address, subnet.broadcast_address) if subnet.prefixlen < 31 else ()
    for address in pool:
        if address not in edges and str(address) not in reserved:
            return str(address)
    raise Conflict(f"no available IPv4 addresses on this network's address pools: "
                   f"{subnet}")


def claim_static(subnet: IPv4Net, requested: str, reserved: set[str]) -> str:
    address = parse_address(requested)
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(f"Invalid address {address}: It does not belong to any of this "
                              f"network's subnets")
    if str(address) in reserved:
        raise Conflict("Address already in use")
    return str(address)


def free_count(subnet: IPv4Net, ip_range: str, reserved: set[str]) -> int:
    pool = parse_subnet(ip_range) if ip_range else subnet
    edges = {subnet.network_address, subnet.broadcast_address} if subnet.prefixlen < 31 else set()
    taken = edges | {ipaddress.IPv4Address(a) for a in reserved}
    return pool.num_addresses - sum(1 for a in taken if a in pool)


def valid_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(p) == 2 and all(c in "0123456789abcdefABCDEF"
                                                       for c in p) for p in parts)


def mac_for(address: str | None) -> str:
    """Docker's MAC for an IPv4 endpoint: 02:42 then the four address bytes;
    random (locally administered) without an IPv4 address."""
    octets = ipaddress.IPv4Address(address).packed if address else os.urandom(4)
    return "02:42:" + ":".join(f"{b:02x}" for b in octets)


def parse_subnet6(text: str) -> ipaddress.IPv6Network:
    try:
        return ipaddress.IPv6Network(text, strict=False)
    except ValueError as exc:
        raise InvalidArgument(f"invalid CIDR address: {text}") from exc


def random_ula() -> ipaddress.IPv6Network:
    """A unique local /64 (fd00::/8 with 40 random bits), as RFC 4193 suggests."""
    prefix = bytes([0xFD]) + os.urandom(5) + bytes(10)
    return ipaddress.IPv6Network((prefix, 64))


def check_user_pool6(subnet: ipaddress.IPv6Network, gateway: str,
                     others: Iterable[ipaddress.IPv6Network]) -> None:
    if any(subnet.overlaps(other) for other in others):
        raise PermissionDenied("Pool overlaps with other one on this address space")
    if gateway and ipaddress.IPv6Address(gateway.split("/")[0]) not in subnet:
        raise InvalidArgument(f"failed to allocate gateway ({gateway}): Requested address is "
                              f"out of range")


def allocate6(subnet: ipaddress.IPv6Network, reserved: set[str]) -> str:
    """The lowest free address after the subnet's first (the gateway's)."""
    for offset in range(1, len(reserved) + 3):
        address = subnet.network_address + offset
        if str(address) not in reserved:
            return str(address)
    raise Conflict(f"no available IPv6 addresses on this network's address pools: {subnet}")


def claim_static6(subnet: ipaddress.IPv6Network, requested: str, reserved: set[str]) -> str:
    try:
        address = ipaddress.IPv6Address(requested)
    except ValueError as exc:
        raise InvalidArgument(f"invalid IPv6 address: {requested}") from exc
    if address not in subnet or address == subnet.network_address:
        raise InvalidArgument(f"Invalid address {address}: It does not belong to any of this "
                              f"network's subnets")
    if str(address) in reserved:
        raise Conflict("Address already in use")
    return str(address)


def link_local(text: str) -> tuple[str, int]:
    """An endpoint's extra link-local address, with Docker's prefix (/16, /64)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise InvalidArgument(f"invalid link-local IP address: {text}") from exc
    return str(address), 16 if address.version == 4 else 64


def check_aux_addresses(subnet: IPv4Net, aux_addresses: dict[str, str]) -> None:
    """Auxiliary addresses (never handed out) must lie in the subnet."""
    for name, text in aux_addresses.items():
        if parse_address(text) not in subnet:
            raise InvalidArgument(f"invalid network config:\ninvalid auxiliary address "
                                  f"{name}: it does not belong to subnet {subnet}")
