"""Docker's Network JSON from the network service's protos, and the bodies
of create and connect as requests."""

from __future__ import annotations

from typing import Any

from berth.network.v1 import network_pb2
from services.gateway.params import Fields


def network_to_json(network: network_pb2.Network, with_containers: bool) -> dict[str, Any]:
    """Docker's Network object (inspect and list shapes)."""
    containers = {}
    if with_containers:
        containers = {
            cid: {"Name": c.name, "EndpointID": c.endpoint_id, "MacAddress": c.mac_address,
                  "IPv4Address": c.ipv4_address, "IPv6Address": c.ipv6_address}
            for cid, c in network.containers.items()}
    config = []
    for c in network.ipam.config:
        entry: dict[str, Any] = {"Subnet": c.subnet, "Gateway": c.gateway}
        if c.ip_range:
            entry["IPRange"] = c.ip_range
        if c.aux_addresses:
            entry["AuxiliaryAddresses"] = dict(c.aux_addresses)
        config.append(entry)
    return {
        "Name": network.name, "Id": network.id, "Created": network.created,
        "Scope": network.scope or "local", "Driver": network.driver,
        "EnableIPv4": network.enable_ipv4, "EnableIPv6": network.enable_ipv6,
        "IPAM": {"Driver": network.ipam.driver or "default",
                 "Options": dict(network.ipam.options) or None, "Config": config},
        "Internal": network.internal, "Attachable": network.attachable,
        "Ingress": network.ingress, "ConfigFrom": {"Network": network.config_from},
        "ConfigOnly": network.config_only,
        "Containers": containers, "Options": dict(network.options),
        "Labels": dict(network.labels),
    }


def ipam_request(body: Fields) -> network_pb2.IPAM:
    ipam = network_pb2.IPAM(driver=body.string("Driver") or "default",
                            options=body.string_map("Options"))
    for entry in body.objects("Config", "network.IPAMConfig"):
        ipam.config.append(network_pb2.IPAMConfig(
            subnet=entry.string("Subnet"), ip_range=entry.string("IPRange"),
            gateway=entry.string("Gateway"),
            aux_addresses=entry.string_map("AuxiliaryAddresses")))
    return ipam


def endpoint_request(network: str, config: Fields) -> network_pb2.EndpointRequest:
    ipam = config.object("IPAMConfig", "network.EndpointIPAMConfig")
    return network_pb2.EndpointRequest(
        network=network, ipv4_address=ipam.string("IPv4Address"),
        ipv6_address=ipam.string("IPv6Address"), aliases=config.strings("Aliases"),
        links=config.strings("Links"), mac_address=config.string("MacAddress"),
        driver_opts=config.string_map("DriverOpts"),
        link_local_ips=ipam.strings("LinkLocalIPs"),
        gw_priority=config.integer("GwPriority", "int32"))
