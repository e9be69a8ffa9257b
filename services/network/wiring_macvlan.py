"""The macvlan and ipvlan drivers: containers get a sub-interface of a parent
link of the host (`-o parent=`), with an address on the parent's segment.

As Docker ships them: no parent makes a dummy `dm-<network ID>` parent, a
parent named `<link>.<vlan>` is made as a VLAN link of `<link>`; links the
driver made are deleted with the network. The gateway is never an address of
the host: it is only the containers' default route (ipvlan l3 routes by
device). Sub-interfaces are created straight in the container's netns, so a
failure leaves nothing on the host. Kernel functions block: run them in a
thread.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from services.common.errors import Internal, InvalidArgument
from services.network.store import NetworkRecord

DRIVERS = ("macvlan", "ipvlan")
PARENT_OPTION = "parent"
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}


@dataclass(frozen=True)
class SubLink:
    """What a network of these drivers makes in each container."""
    kind: str             # macvlan or ipvlan
    parent: str
    mode: str             # macvlan mode, or ipvlan l2/l3/l3s
    flag: str = "bridge"  # ipvlan only

    @property
    def routes_by_device(self) -> bool:
        """ipvlan l3/l3s: the parent routes; containers have no gateway."""
        return self.kind == "ipvlan" and self.mode != "l2"


def dummy_parent(network_id: str) -> str:
    return "dm-" + network_id[:12]


def sublink_of(network: NetworkRecord) -> SubLink:
    options = network.options
    parent = options.get(PARENT_OPTION) or dummy_parent(network.id)
    if network.driver == "ipvlan":
        return SubLink("ipvlan", parent, options.get("ipvlan_mode") or "l2",
                       options.get("ipvlan_flag") or "bridge")
    return SubLink("macvlan", parent, options.get("macvlan_mode") or "bridge")


def check_options(driver: str, options: dict[str, str]) -> None:
    """Docker's checks of the driver options, before anything is made."""
    if driver == "macvlan":
        mode = options.get("macvlan_mode", "")
        if mode and mode not in MACVLAN_MODES:
            raise InvalidArgument(f"requested macvlan mode '{mode}' is not valid, 'bridge' "
                                  f"mode is the macvlan driver default")
    else:
        mode = options.get("ipvlan_mode", "")
        if mode and mode not in IPVLAN_MODES:
            raise InvalidArgument(f"requested ipvlan mode '{mode}' is not valid, 'l2' mode is "
                                  f"the ipvlan driver default")
        flag = options.get("ipvlan_flag", "")
        if flag and flag not in IPVLAN_FLAGS:
            raise InvalidArgument(f"requested ipvlan flag '{flag}' is not valid, 'bridge' is "
                                  f"the ipvlan driver default")
    if options.get(PARENT_OPTION) == "lo":
        raise InvalidArgument(f"loopback interface is not a valid {driver} parent link")


def check_parent_free(network: NetworkRecord, others: list[NetworkRecord]) -> None:
    parent = sublink_of(network).parent
    for other in others:
        if other.driver == network.driver and sublink_of(other).parent == parent:
            raise InvalidArgument(f"network {dummy_parent(other.id)} is already using parent "
                                  f"interface {parent}")


# -- the parent link (host side) ---------------------------------------------

def prepare_parent(network: NetworkRecord) -> str:
    """Make the parent when Docker would; the name of a link made, else ""."""
    parent = sublink_of(network).parent
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=parent):
            return ""
        if parent == dummy_parent(network.id):
            _add_up(ipr, f"the dummy parent interface {parent}", ifname=parent, kind="dummy")
            return parent
        link, vlan = _parse_vlan(ipr, parent)
        _add_up(ipr, f"{parent} vlan link", ifname=parent, kind="vlan", link=link,
                vlan_id=vlan)
        return parent


def _parse_vlan(ipr: IPRoute, name: str) -> tuple[int, int]:
    if "." not in name:
        raise InvalidArgument(f"invalid subinterface vlan name {name}, example formatting is "
                              f"eth0.10")
    parts = name.split(".")
    if len(parts) != 2:
        raise InvalidArgument(f"required interface name format is: name.vlan_id, ex. eth0.10 "
                              f"for vlan 10, instead received {name}")
    link, vid = parts
    if not vid.isdigit():
        raise InvalidArgument(f"unable to parse a valid vlan id from: {vid} (ex. eth0.10 for "
                              f"vlan 10)")
    indexes = ipr.link_lookup(ifname=link)
    if not indexes:
        # dockerd's words, typo included: clients and scripts match them.
        raise InvalidArgument(f"-o parent interface does was not found on the host: {link}")
    if not 1 <= int(vid) <= 4094:
        raise InvalidArgument(f"vlan id must be between 1-4094, received: {vid}")
    return indexes[0], int(vid)


def _add_up(ipr: IPRoute, what: str, **attrs) -> None:
    try:
        ipr.link("add", **attrs)
    except NetlinkError as exc:
        raise Internal(f"failed to create {what}: {exc.args[1]}") from exc
    index = ipr.link_lookup(ifname=attrs["ifname"])[0]
    try:
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        ipr.link("del", index=index)
        raise Internal(f"failed to enable {what}: {exc.args[1]}") from exc


def remove_parent(name: str) -> None:
    """Delete a parent link the driver made (never one the user named)."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise


# -- endpoints (inside the container's netns) ---------------------------------

def add_endpoint_link(sublink: SubLink, netns_path: str, ifname: str, mac: str,
                      mtu: int) -> None:
    """The sub-interface, created straight in the netns as `ifname`."""
    attrs: dict = {"ifname": ifname, "kind": sublink.kind}
    if sublink.kind == "macvlan":
        attrs["macvlan_mode"] = sublink.mode
        attrs["address"] = mac
    else:
        attrs["ipvlan_mode"] = IPVLAN_MODES[sublink.mode]
        attrs["ipvlan_flags"] = IPVLAN_FLAGS[sublink.flag]
    if mtu:
        attrs["mtu"] = mtu
    ns_fd = os.open(netns_path, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            indexes = ipr.link_lookup(ifname=sublink.parent)
            if not indexes:
                raise Internal(f"the requested parent interface {sublink.parent} was not "
                               f"found on the Docker host")
            ipr.link("add", link=indexes[0], net_ns_fd=ns_fd, **attrs)
    except NetlinkError as exc:
        raise Internal(f"failed to create the {sublink.kind} port: {exc.args[1]}") from exc
    finally:
        os.close(ns_fd)
