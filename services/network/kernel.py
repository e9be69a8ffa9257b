"""Netlink work through pyroute2: bridges, veth pairs, netns files.

Every function here blocks (netlink round trips, a thread of its own that
enters a netns for its sockets, services/common/netns.py);
callers run them with asyncio.to_thread.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pyroute2 import Conntrack, IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from services.common.errors import Internal
from services.common.netns import enter as _enter
from services.common.netns import in_fresh_thread as _in_fresh_thread

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02      # no duplicate address detection: usable at once
AF_INET6 = 10


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys/net", path).write_text(value)


def enable_forwarding() -> None:
    _sysctl("ipv4/ip_forward", "1")


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 subnet routed or addressed on the host (the default route aside)."""
    found: list[ipaddress.IPv4Network] = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=2):
            dst = route.get_attr("RTA_DST")
            if dst and route["dst_len"] > 0:
                found.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=2):
            local = addr.get_attr("IFA_ADDRESS")
            if local and not local.startswith("127."):
                found.append(ipaddress.IPv4Network(f"{local}/{addr['prefixlen']}",
                                                   strict=False))
    return found


def link_kind(name: str) -> str | None:
    """The kind of the host link `name` ("bridge", "veth", "" for a physical
    one or lo), None when there is no such link."""
    with IPRoute() as ipr:
        links = ipr.get_links(ifname=name) if ipr.link_lookup(ifname=name) else []
        if not links:
            return None
        info = links[0].get_attr("IFLA_LINKINFO")
        return (info.get_attr("IFLA_INFO_KIND") if info else None) or ""


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def ensure_bridge(name: str, gateway: str, prefixlen: int, mtu: int,
                  gateway6: str = "", prefixlen6: int = 0) -> None:
    """Create (or re-adopt) the bridge with its gateway address(es), up."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="bridge")
        index = ipr.link_lookup(ifname=name)[0]
        if mtu:
            # Set as a change, not at creation: only then does the kernel keep
            # it rather than follow the ports' MTU (1500 with none).
            ipr.link("set", index=index, mtu=mtu)
        present = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)}
        if gateway and (gateway, prefixlen) not in present:
            ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        if gateway6:
            _sysctl(f"ipv6/conf/{name}/disable_ipv6", "0")
            if (gateway6, prefixlen6) not in present:
                ipr.addr("add", index=index, address=gateway6, prefixlen=prefixlen6,
                         flags=IFA_F_NODAD)
        ipr.link("set", index=index, state="up")
    # Published ports on 127.0.0.1 are DNATed to the container: the kernel
    # routes such loopback-sourced packets only with route_localnet.
    _sysctl(f"ipv4/conf/{name}/route_localnet", "1")


def delete_link(name: str) -> None:
    with IPRoute() as ipr:
        indexes = ipr.link_lookup(ifname=name)
        if indexes:
            try:
                ipr.link("del", index=indexes[0])
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise


def in_netns(path: str, work: Callable[[IPRoute], T]) -> T:
    """`work` with an IPRoute bound inside the netns file `path`."""
    def run() -> T:
        _enter(path)
        with IPRoute() as ipr:
            return work(ipr)
    return _in_fresh_thread(run)


def resolver_sockets(path: str, address: str) -> tuple[socket.socket, socket.socket]:
    """A UDP socket and a listening TCP socket on random ports of `address`
    inside the netns `path`: a socket stays in the namespace it was made in."""
    def run() -> tuple[socket.socket, socket.socket]:
        _enter(path)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((address, 0))
            tcp.bind((address, 0))
            tcp.listen(128)
        except OSError:
            udp.close()
            tcp.close()
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    return _in_fresh_thread(run)


def create_netns(path: Path) -> None:
    """A new netns held by a bind mount on `path`, with lo up."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def run() -> None:
        if netns._get_libc().unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        netns.attach(str(path), pid=f"self/task/{threading.get_native_id()}")
        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    try:
        _in_fresh_thread(run)
    except OSError as exc:
        remove_netns(path)
        raise Internal(f"cannot create network namespace {path}: {exc}") from exc


def remove_netns(path: Path) -> None:
    if not path.exists():
        return
    netns._get_libc().umount2(str(path).encode(), netns.MNT_DETACH)
    path.unlink(missing_ok=True)


def release_netns_dir(directory: Path) -> None:
    """Unmount the shared bind mount netns.create puts on the directory."""
    if directory.is_dir() and not any(directory.iterdir()):
        netns._get_libc().umount2(str(directory).encode(), netns.MNT_DETACH)


@dataclass
class Wiring:
    netns_path: str
    bridge: str           # empty: the link is made by another driver (macvlan/ipvlan)
    host_ifname: str
    ifname: str
    address: str
    prefixlen: int
    mac: str
    mtu: int
    address6: str = ""
    prefixlen6: int = 0
    link_local: tuple[tuple[str, int], ...] = ()   # extra (address, prefixlen)


@dataclass(frozen=True)
class DefaultRoute:
    """Through `gateway`, or straight out of `ifname` when there is no gateway."""
    gateway: str
    ifname: str


def wire(w: Wiring) -> None:
    """A veth pair: host end on the bridge, the other end in the netns."""
    ns_fd = os.open(w.netns_path, os.O_RDONLY)
    try:
        peer = {"ifname": w.ifname, "net_ns_fd": ns_fd, "address": w.mac}
        if w.mtu:
            peer["mtu"] = w.mtu
        with IPRoute() as ipr:
            attrs = {"mtu": w.mtu} if w.mtu else {}
            ipr.link("add", ifname=w.host_ifname, kind="veth", peer=peer, **attrs)
    finally:
        os.close(ns_fd)
    try:
        with IPRoute() as ipr:
            host = ipr.link_lookup(ifname=w.host_ifname)[0]
            bridge = ipr.link_lookup(ifname=w.bridge)[0]
            ipr.link("set", index=host, master=bridge, state="up")
        configure_inside(w)
    except Exception:
        delete_link(w.host_ifname)
        raise


def configure_inside(w: Wiring) -> None:
    """Addresses on the container's end of the link, up."""
    def work(inside: IPRoute) -> None:
        index = inside.link_lookup(ifname=w.ifname)[0]
        if w.address:
            inside.addr("add", index=index, address=w.address, prefixlen=w.prefixlen)
        for address, prefixlen in w.link_local:
            inside.addr("add", index=index, address=address, prefixlen=prefixlen,
                        flags=IFA_F_NODAD)
        inside.link("set", index=index, state="up")
        if w.address6:
            inside.addr("add", index=index, address=w.address6, prefixlen=w.prefixlen6,
                        flags=IFA_F_NODAD)
    in_netns(w.netns_path, work)


def delete_link_inside(netns_path: str, ifname: str) -> None:
    def work(inside: IPRoute) -> None:
        for index in inside.link_lookup(ifname=ifname):
            inside.link("del", index=index)
    in_netns(netns_path, work)


def set_default_routes(netns_path: str, route: DefaultRoute | None,
                       route6: DefaultRoute | None) -> None:
    """Replace the default routes of the netns; None removes one."""
    def work(inside: IPRoute) -> None:
        for family, dst, chosen in ((socket.AF_INET, "0.0.0.0/0", route),
                                    (AF_INET6, "::/0", route6)):
            if chosen is None:
                try:
                    inside.route("del", dst=dst, family=family)
                except NetlinkError as exc:
                    if exc.code not in (errno.ENOENT, errno.ESRCH):
                        raise
                continue
            target = {"gateway": chosen.gateway} if chosen.gateway else \
                {"oif": inside.link_lookup(ifname=chosen.ifname)[0]}
            inside.route("replace", dst=dst, family=family, **target)
    in_netns(netns_path, work)


def forget_udp_flows(host_ports: set[int]) -> None:
    """Drop conntrack entries of UDP flows to these host ports.

    A UDP client that keeps sending keeps its conntrack entry alive, and the
    entry pins the NAT decision made for its first packet: after a port is
    published (or unpublished) such flows would never see the new mapping.
    """
    with Conntrack() as ct:
        udp = NFCTAttrTuple(proto=socket.IPPROTO_UDP)
        for entry in list(ct.dump_entries(tuple_orig=udp)):
            if entry.tuple_orig.dport in host_ports:
                ct.delete(entry)


def unique_name(prefix: str, tag: str) -> str:
    """An interface name `prefix`+`tag`+random hex, 15 characters."""
    room = 15 - len(prefix) - len(tag)
    return prefix + tag + os.urandom(8).hex()[:room]
