"""Pod sandboxes (network_mode "cni"): a netns file wired by the CNI chain.

The pod's addresses are not endpoints of berth networks: they live in the
CNI result cache (cni.py), and are shown as endpoints of a network record
named after the CNI network.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.config import Config
from services.common.errors import BerthError, InvalidArgument
from services.network import files, kernel
from services.network.cni import (
    Attachment,
    CniResult,
    CniRunner,
    validate_cni_arg,
    validate_container_id,
)
from services.network.ports import parse_host_ports, parse_port
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord

if TYPE_CHECKING:
    from services.network.specs import SandboxSpec

log = logging.getLogger("berth.network.pods")

NOT_READY_REASON = "NetworkPluginNotReady"


@dataclass(frozen=True)
class PodRef:
    """The Kubernetes pod of a sandbox, passed to the plugins as K8S_POD_* CNI_ARGS."""

    name: str = ""
    namespace: str = ""
    uid: str = ""


@dataclass(frozen=True)
class CniStatus:
    ready: bool
    reason: str = ""
    message: str = ""


def port_mappings(mappings: list[tuple[str, str, str]]) -> list[dict]:
    """The portMappings capability: the mappings with a host port."""
    result = []
    for container_port, host_ip, host_port in mappings:
        number, proto = parse_port(container_port)
        first, last = parse_host_ports(host_port)
        if first != last:
            raise InvalidArgument(f"a pod's host port is a single port, not {host_port}")
        if first:
            entry = {"hostPort": first, "containerPort": number, "protocol": proto}
            if host_ip:
                entry["hostIP"] = host_ip
            result.append(entry)
    return result


def _extra_hosts(entries: list[str], result: CniResult) -> list[tuple[str, str]]:
    hosts = []
    for entry in entries:
        name, sep, address = entry.partition(":")
        if not sep:
            raise InvalidArgument(f"invalid extra host: {entry}")
        if address == "host-gateway":
            address = result.addresses[0].gateway if result.addresses else "127.0.0.1"
        hosts.append((name, address))
    return hosts


def _resolv_conf(spec: SandboxSpec, result: CniResult) -> str:
    """The pod's DNS settings first, then the plugins', then the host's."""
    host = files.read_host_resolv_conf()
    return files.resolv_conf(
        spec.dns or list(result.dns.nameservers) or files.container_nameservers(host),
        spec.dns_search or list(result.dns.search) or host.search,
        spec.dns_options or list(result.dns.options) or host.options)


class PodNetworks:
    def __init__(self, config: Config, store: NetworkStore, netns_dir: Path) -> None:
        self.store = store
        self.netns_dir = netns_dir
        self.cni = CniRunner(config.cni_conf_dir, config.cni_bin_dirs,
                             config.service_dir("network") / "cni")

    def status(self) -> CniStatus:
        problem = self.cni.status()
        return CniStatus(False, NOT_READY_REASON, problem) if problem else CniStatus(True)

    async def attach(self, sandbox: SandboxRecord, spec: SandboxSpec) -> None:
        """Make the netns and run ADD; the caller's teardown undoes a failure."""
        validate_container_id(spec.container_id)
        for what, value in (("name", spec.pod.name), ("namespace", spec.pod.namespace),
                            ("uid", spec.pod.uid)):
            validate_cni_arg(what, value)
        mappings = port_mappings(spec.port_mappings)
        path = self.netns_dir / spec.container_id
        sandbox.netns_path, sandbox.owns_netns = str(path), True
        sandbox.dns = list(spec.dns)
        self.store.save_sandbox(sandbox)    # a restart then finds what to undo
        await asyncio.to_thread(kernel.create_netns, path)
        result = await self.cni.add(Attachment(
            container_id=spec.container_id, netns=str(path), pod_name=spec.pod.name,
            pod_namespace=spec.pod.namespace, pod_uid=spec.pod.uid, port_mappings=mappings))
        first = str(result.addresses[0].address.ip) if result.addresses else ""
        sandbox.hosts = files.hosts_file(spec.hostname, spec.domainname, [first],
                                         _extra_hosts(spec.extra_hosts, result))
        sandbox.resolv_conf = _resolv_conf(spec, result)

    async def detach(self, sandbox: SandboxRecord) -> None:
        """DEL, best effort: a failure is logged, the sandbox goes anyway."""
        try:
            await self.cni.delete(sandbox.container_id)
        except BerthError as exc:
            log.warning("CNI DEL of pod sandbox %s: %s", sandbox.container_id, exc.message)

    async def check(self, sandbox: SandboxRecord) -> None:
        """CHECK a re-adopted pod; a pod whose network broke is logged."""
        try:
            await self.cni.check(sandbox.container_id)
        except BerthError as exc:
            log.warning("CNI CHECK of pod sandbox %s: %s", sandbox.container_id, exc.message)

    def endpoints(self, sandbox: SandboxRecord) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """One endpoint per pod address, on a record standing for the CNI network."""
        result = self.cni.cached_result(sandbox.container_id)
        if result is None:
            return []
        network_id = hashlib.sha256(f"cni:{result.network}".encode()).hexdigest()
        found = []
        for pod_address in result.addresses:
            ip, subnet = str(pod_address.address.ip), str(pod_address.address.network)
            network = NetworkRecord(id=network_id, name=result.network, driver="cni",
                                    created="")
            endpoint = EndpointRecord(network_id=network_id,
                                      container_id=sandbox.container_id,
                                      endpoint_id=pod_address.ifname,
                                      container_name=sandbox.container_name,
                                      mac=pod_address.mac, ifname=pod_address.ifname)
            if pod_address.address.version == 4:
                network.subnet, network.gateway, endpoint.ip = subnet, pod_address.gateway, ip
            else:
                network.subnet6, network.gateway6, endpoint.ip6 = \
                    subnet, pod_address.gateway, ip
            found.append((network, endpoint))
        return found
