"""Pod sandboxes through CNI, over the network service's gRPC.

Debian's containernetworking-plugins (bridge, host-local, portmap) in a
config directory of the test's own; the bridge is named with the service's
instance prefix and host-local keeps its leases under the test's root, so
nothing collides with other engines. Traffic only between the host and the
namespaces these tests create.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.network.v1 import network_pb2 as pb
from services.network import kernel
from tests.support.network import (
    CNI_PLUGIN_DIR,
    NetworkService,
    free_subnet,
    links,
    needs_cni_plugins,
    run_in,
    running_network_service,
    serve_http,
)

pytestmark = needs_cni_plugins


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cni-conf")


@pytest.fixture(scope="module")
def subnet() -> ipaddress.IPv4Network:
    """One for the module: the bridge keeps the address of its first pod."""
    return free_subnet(88)


@pytest.fixture(scope="module")
def service(conf_dir: Path) -> Iterator[NetworkService]:
    with running_network_service(("--cni-conf-dir", str(conf_dir),
                                  "--cni-bin-dir", str(CNI_PLUGIN_DIR))) as running:
        yield running
        kernel.delete_link(bridge_name(running))


def bridge_name(service: NetworkService) -> str:
    return f"{service.prefix}cni0"


class PodNet:
    """The conflist of a test and what the plugins leave on the host."""

    def __init__(self, service: NetworkService, conf_dir: Path,
                 subnet: ipaddress.IPv4Network) -> None:
        self.service = service
        self.conf_file = conf_dir / "10-pods.conflist"
        self.subnet = subnet
        self.name = f"{service.prefix}-pods"
        self.ipam_dir = service.root / "ipam"

    def write(self, **bridge_options) -> None:
        bridge = {"type": "bridge", "bridge": bridge_name(self.service), "isGateway": True,
                  "ipMasq": True, "hairpinMode": True,
                  "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                           "ranges": [[{"subnet": str(self.subnet)}]],
                           "routes": [{"dst": "0.0.0.0/0"}]}} | bridge_options
        self.conf_file.write_text(json.dumps({
            "cniVersion": "1.0.0", "name": self.name,
            "plugins": [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}]}))

    def leases(self) -> set[str]:
        directory = self.ipam_dir / self.name
        if not directory.exists():
            return set()
        return {p.name for p in directory.iterdir() if p.name.count(".") == 3}

    def bridge_ports(self) -> list[str]:
        ports = Path("/sys/class/net") / bridge_name(self.service) / "brif"
        return sorted(p.name for p in ports.iterdir()) if ports.exists() else []


@pytest.fixture
def podnet(service: NetworkService, conf_dir: Path,
           subnet: ipaddress.IPv4Network) -> Iterator[PodNet]:
    net = PodNet(service, conf_dir, subnet)
    net.write()
    stub = service.stub()
    yield net
    service.end_children()
    for n in range(20):
        stub.DestroySandbox(pb.DestroySandboxRequest(container_id=pod_id(n)))
    net.conf_file.unlink(missing_ok=True)


def pod_id(n: int) -> str:
    return f"{n:02x}" * 32


def run_pod(stub, n: int, **kwargs) -> pb.Sandbox:
    return stub.CreateSandbox(pb.CreateSandboxRequest(
        container_id=pod_id(n), hostname=f"pod{n}", network_mode="cni",
        pod=pb.PodNetwork(name=f"pod{n}", namespace="default", uid=f"uid-{n}"), **kwargs))


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]


def cached(service: NetworkService) -> list[Path]:
    """The network service's CNI result cache entries."""
    return list((service.root / "data" / "network" / "cni").glob("*.json"))


def nat_rules() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True,
                          text=True).stdout


def test_status_not_ready_without_config(service: NetworkService, conf_dir: Path) -> None:
    stub = service.stub()
    status = stub.CniStatus(pb.CniStatusRequest())
    assert not status.ready and status.reason == "NetworkPluginNotReady"
    assert f"no CNI network config found in {conf_dir}" in status.message
    with pytest.raises(grpc.RpcError) as failure:
        run_pod(stub, 1)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not any((service.root / "run" / "netns").glob("*"))


def test_status_names_a_missing_plugin(service: NetworkService, conf_dir: Path) -> None:
    conf = conf_dir / "00-broken.conf"
    conf.write_text(json.dumps({"cniVersion": "0.4.0", "name": "broken",
                                "type": "no-such-plugin"}))
    try:
        status = service.stub().CniStatus(pb.CniStatusRequest())
        assert not status.ready
        assert 'CNI plugin "no-such-plugin" not found in /usr/lib/cni' in status.message
    finally:
        conf.unlink()


def test_two_pods_reach_each_other(service: NetworkService, podnet: PodNet,
                                   tmp_path: Path) -> None:
    stub = service.stub()
    assert stub.CniStatus(pb.CniStatusRequest()).ready
    first = run_pod(stub, 1)
    second = run_pod(stub, 2, dns=["10.96.0.10"], dns_search=["ns.svc.cluster.local"],
                     dns_options=["ndots:5"])
    for box in (first, second):
        endpoint = box.endpoints[0]
        assert box.network_mode == "cni" and Path(box.netns_path).exists()
        assert ipaddress.IPv4Address(endpoint.ip_address) in podnet.subnet
        assert endpoint.ip_prefix_len == 24 and endpoint.endpoint_id == "eth0"
        assert endpoint.network_name == podnet.name
        assert endpoint.gateway == str(podnet.subnet.network_address + 1)
    assert first.endpoints[0].ip_address != second.endpoints[0].ip_address
    assert f"{first.endpoints[0].ip_address}\tpod1" in first.hosts
    assert "nameserver" in first.resolv_conf
    assert second.resolv_conf == ("nameserver 10.96.0.10\nsearch ns.svc.cluster.local\n"
                                  "options ndots:5\n")
    again = stub.GetSandbox(pb.GetSandboxRequest(container_id=pod_id(1)))
    assert again.endpoints[0].ip_address == first.endpoints[0].ip_address

    serve_http(service, first, tmp_path / "web", "hello pod")
    reply = run_in(second.netns_path, "busybox", "wget", "-q", "-O-",
                   f"http://{first.endpoints[0].ip_address}/")
    assert reply.stdout == "hello pod", reply.stderr


def test_host_port_through_portmap(service: NetworkService, podnet: PodNet,
                                   tmp_path: Path) -> None:
    stub = service.stub()
    port = free_port()
    box = run_pod(stub, 3, port_mappings=[
        pb.PortMapping(container_port="80/tcp", host_port=str(port)),
        pb.PortMapping(container_port="81/tcp", host_port="")])
    serve_http(service, box, tmp_path / "web", "through portmap")
    assert fetch(f"http://{host_address()}:{port}/") == "through portmap"
    assert fetch(f"http://127.0.0.1:{port}/") == "through portmap"
    assert pod_id(3) in nat_rules()

    stub.DestroySandbox(pb.DestroySandboxRequest(container_id=pod_id(3)))
    assert pod_id(3) not in nat_rules()


def test_single_plugin_conf_at_spec_0_4_0(service: NetworkService, podnet: PodNet,
                                          conf_dir: Path) -> None:
    podnet.conf_file.unlink()
    conf = conf_dir / "10-pods.conf"
    conf.write_text(json.dumps({
        "cniVersion": "0.4.0", "name": podnet.name, "type": "bridge",
        "bridge": bridge_name(service), "isGateway": True,
        "ipam": {"type": "host-local", "dataDir": str(podnet.ipam_dir),
                 "ranges": [[{"subnet": str(podnet.subnet)}]]}}))
    try:
        stub = service.stub()
        box = run_pod(stub, 8)
        assert ipaddress.IPv4Address(box.endpoints[0].ip_address) in podnet.subnet
        assert podnet.leases() == {box.endpoints[0].ip_address}
        stub.DestroySandbox(pb.DestroySandboxRequest(container_id=pod_id(8)))
        assert podnet.leases() == set() and podnet.bridge_ports() == []
    finally:
        conf.unlink()


def test_destroy_runs_del_and_cleans_up(service: NetworkService, podnet: PodNet) -> None:
    stub = service.stub()
    before = links()
    box = run_pod(stub, 4)
    veths = {name for name in links() - before if name.startswith("veth")}
    assert len(veths) == 1 and podnet.bridge_ports() == sorted(veths)
    assert podnet.leases() == {box.endpoints[0].ip_address}

    stub.DestroySandbox(pb.DestroySandboxRequest(container_id=pod_id(4)))
    assert not Path(box.netns_path).exists()
    assert podnet.leases() == set()
    assert podnet.bridge_ports() == [] and not veths & links()
    assert stub.GetSandbox(pb.GetSandboxRequest(container_id=pod_id(4))).netns_path == ""
    assert not cached(service)
    stub.DestroySandbox(pb.DestroySandboxRequest(container_id=pod_id(4)))


def test_del_after_restart_uses_the_cached_config(service: NetworkService,
                                                  podnet: PodNet) -> None:
    box = run_pod(service.stub(), 5)
    service.stop()
    podnet.conf_file.unlink()
    service.start()
    stub = service.stub()
    again = stub.GetSandbox(pb.GetSandboxRequest(container_id=pod_id(5)))
    assert again.endpoints[0].ip_address == box.endpoints[0].ip_address
    assert "CNI CHECK" not in service.logs()

    stub.DestroySandbox(pb.DestroySandboxRequest(container_id=pod_id(5)))
    assert podnet.leases() == set() and podnet.bridge_ports() == []
    assert not Path(box.netns_path).exists()


def test_pod_whose_netns_went_away_is_deleted_at_restart(service: NetworkService,
                                                        podnet: PodNet) -> None:
    # Without ipMasq: its rules are found through the pod's interface, which
    # went away with the netns (the bridge plugin's own limit on DEL).
    podnet.write(ipMasq=False)
    box = run_pod(service.stub(), 9)
    service.stop()
    kernel.remove_netns(Path(box.netns_path))
    service.start()
    assert podnet.leases() == set() and podnet.bridge_ports() == []
    assert not cached(service)


def test_plugin_error_is_reported_and_undone(service: NetworkService, podnet: PodNet) -> None:
    podnet.write(ipam={"type": "host-local", "dataDir": str(podnet.ipam_dir),
                       "ranges": [[{"subnet": "not-a-subnet"}]]})
    stub = service.stub()
    with pytest.raises(grpc.RpcError) as failure:
        run_pod(stub, 6)
    assert 'CNI plugin "bridge" failed (ADD on network' in failure.value.details()
    assert "not-a-subnet" in failure.value.details()
    assert not (service.root / "run" / "netns" / pod_id(6)).exists()
    assert stub.GetSandbox(pb.GetSandboxRequest(container_id=pod_id(6))).netns_path == ""
    assert podnet.bridge_ports() == [] and not cached(service)


def test_pod_sandbox_refuses_docker_networks(service: NetworkService, podnet: PodNet) -> None:
    stub = service.stub()
    run_pod(stub, 7)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Connect(pb.ConnectRequest(container_id=pod_id(7),
                                       endpoint=pb.EndpointRequest(network="bridge")))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pod_names_cannot_add_cni_args(service: NetworkService, podnet: PodNet) -> None:
    """CNI_ARGS joins K8S_POD_NAME=...;...: a ';' in a name would add an
    argument of its own (host-local's IP= picks the address)."""
    stub = service.stub()
    wanted = podnet.subnet.network_address + 200
    for pod in (pb.PodNetwork(name=f"p;IP={wanted}", namespace="default", uid="u"),
                pb.PodNetwork(name="p", namespace="default", uid="u=1")):
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateSandbox(pb.CreateSandboxRequest(
                container_id=pod_id(8), hostname="pod8", network_mode="cni", pod=pod))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "CNI_ARGS cannot carry" in refused.value.details()
    assert str(wanted) not in podnet.leases()
    assert not (service.root / "run" / "netns" / pod_id(8)).exists()
