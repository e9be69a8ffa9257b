"""CRI pods on a CNI bridge (Debian's containernetworking-plugins): pod IPs in
PodSandboxStatus, two pods reaching each other by pod IP, a hostPort
through portmap, the pod's namespaces shared by its containers, and the cri
service sweeping the pod networks and leases it does not know, when it
restarts and when the network or image service does."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import socket
import sqlite3
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from k8s.runtime.v1 import api_pb2 as cri
from k8s.runtime.v1 import api_pb2_grpc
from services.network import kernel
from tests.support.cri import PAUSE_IMAGE, load_pause_image, remove_pods
from tests.support.engine import Engine, running_engine
from tests.support.network import CNI_PLUGIN_DIR, free_subnet, needs_cni_plugins
from tests.support.polling import wait_for
from tests.support.services import kill_service

pytestmark = needs_cni_plugins


@pytest.fixture(scope="module")
def subnet() -> ipaddress.IPv4Network:
    return free_subnet(89)


@pytest.fixture(scope="module")
def cni_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CNI config and the host-local IPAM's allocations (ipam/)."""
    return tmp_path_factory.mktemp("cri-pods")


@pytest.fixture(scope="module")
def engine(cni_root: Path, subnet: ipaddress.IPv4Network) -> Iterator[Engine]:
    bridge = "bcri" + secrets.token_hex(4)
    (cni_root / "cni").mkdir()
    (cni_root / "cni" / "10-pods.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "cri-test-pods", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(cni_root / "ipam"),
                      "ranges": [[{"subnet": str(subnet)}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    (cni_root / "engine.json").write_text(json.dumps({"cri-sandbox-image": PAUSE_IMAGE}))
    try:
        with running_engine(args=("--config", str(cni_root / "engine.json"),
                                  "--cni-conf-dir", str(cni_root / "cni"),
                                  "--cni-bin-dir", str(CNI_PLUGIN_DIR))) as up:
            yield up
    finally:
        kernel.delete_link(bridge)


@pytest.fixture(scope="module")
def images(engine: Engine, busybox: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    load_pause_image(engine, tmp_path_factory.mktemp("pause"))
    return busybox


@pytest.fixture(scope="module")
def runtime(engine: Engine) -> Iterator[api_pb2_grpc.RuntimeServiceStub]:
    with grpc.insecure_channel(f"unix://{engine.exec_root}/cri.sock") as channel:
        yield api_pb2_grpc.RuntimeServiceStub(channel)


@pytest.fixture
def pods(runtime: api_pb2_grpc.RuntimeServiceStub) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    remove_pods(runtime, made)


@pytest.fixture
def log_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="berth-cri-logs-") as directory:
        yield Path(directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Pod:
    def __init__(self, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
                 config: cri.PodSandboxConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.id = runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config)).pod_sandbox_id
        pods.append(self.id)

    @property
    def ip(self) -> str:
        return self.runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(
            pod_sandbox_id=self.id)).status.network.ip

    def start(self, name: str, image: str, script: str,
              pid: int = cri.CONTAINER) -> str:
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=image),
            command=["sh", "-c", script], log_path=f"{name}.log",
            linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                namespace_options=cri.NamespaceOption(pid=pid))))
        cid = self.runtime.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=self.id, config=config, sandbox_config=self.config)).container_id
        self.runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
        return cid

    def exec(self, cid: str, *cmd: str) -> cri.ExecSyncResponse:
        return self.runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=list(cmd),
                                                         timeout=30))


def pod_config(name: str, log_dir: Path, ports: list[cri.PortMapping] | None = None
               ) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="default", uid=f"uid-{name}"),
        hostname=name, log_directory=str(log_dir), port_mappings=ports or [])


def serve(pod: Pod, image: str, text: str) -> str:
    cid = pod.start("web", image, f"mkdir /www && echo {text} > /www/index.html && "
                                  "exec httpd -f -p 80 -h /www")
    wait_for(lambda: pod.exec(cid, "wget", "-q", "-O-", "http://127.0.0.1/").exit_code == 0)
    return cid


def test_two_pods_reach_each_other_by_pod_ip(
        images: str, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
        subnet: ipaddress.IPv4Network, log_dir: Path, cni_root: Path) -> None:
    server = Pod(runtime, pods, pod_config("server", log_dir))
    client = Pod(runtime, pods, pod_config("client", log_dir))
    assert ipaddress.IPv4Address(server.ip) in subnet
    assert sorted(allocated_pod_ips(cni_root)) == sorted([server.ip, client.ip])
    serve(server, images, "hello-pod")
    shell = client.start("shell", images, "exec sleep 1000")
    reply = client.exec(shell, "wget", "-q", "-O-", f"http://{server.ip}/")
    assert (reply.exit_code, reply.stdout) == (0, b"hello-pod\n"), reply.stderr
    address = client.exec(shell, "ip", "-4", "-o", "addr", "show", "eth0").stdout.decode()
    assert f"inet {client.ip}/" in address


def test_host_port_through_portmap(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                                   pods: list[str], log_dir: Path) -> None:
    port = free_port()
    pod = Pod(runtime, pods, pod_config("hostport", log_dir, [
        cri.PortMapping(protocol=cri.TCP, container_port=80, host_port=port)]))
    serve(pod, images, "through-portmap")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        assert reply.read() == b"through-portmap\n"


def test_containers_share_the_pod_namespaces(
        images: str, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
        log_dir: Path) -> None:
    pod = Pod(runtime, pods, pod_config("shared", log_dir))
    first = pod.start("first", images, "exec sleep 1000", pid=cri.POD)
    second = pod.start("second", images, "exec sleep 1001", pid=cri.POD)
    processes = pod.exec(second, "ps", "-o", "args").stdout.decode()
    assert "sleep 1000" in processes and "sleep 1001" in processes
    assert pod.exec(first, "hostname").stdout == b"shared\n"
    ipc = {pod.exec(cid, "readlink", "/proc/self/ns/ipc").stdout for cid in (first, second)}
    assert len(ipc) == 1
    alone = pod.start("alone", images, "exec sleep 1002")
    assert "sleep 1000" not in pod.exec(alone, "ps", "-o", "args").stdout.decode()


def allocated_pod_ips(cni_root: Path) -> list[str]:
    """The addresses host-local has handed out (one file each)."""
    allocations = cni_root / "ipam" / "cri-test-pods"
    return [f.name for f in allocations.glob("*") if f.name[0].isdigit()]


def test_failed_run_pod_sandbox_leaves_nothing(
        engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        log_dir: Path, cni_root: Path) -> None:
    config = pod_config("broken", log_dir)
    config.linux.sysctls["kernel.no_such_sysctl"] = "1"
    with pytest.raises(grpc.RpcError) as failed:
        runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config))
    assert failed.value.code() == grpc.StatusCode.UNKNOWN
    assert failed.value.details().startswith("failed to create containerd task: ")
    assert "no_such_sysctl" in failed.value.details()
    assert allocated_pod_ips(cni_root) == []
    assert not runtime.ListPodSandbox(cri.ListPodSandboxRequest()).items
    assert engine.docker("ps", "-aq").stdout == b""
    assert not list((engine.exec_root / "netns").glob("*"))
    assert not list((engine.data_root / "cri" / "sandboxes").iterdir())


def cri_leases(engine: Engine) -> list[str]:
    database = engine.data_root / "image" / "state.db"
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT holder FROM leases WHERE owner = 'cri'").fetchall()
    finally:
        connection.close()
    return sorted(holder for (holder,) in rows)


def peer_stubs(engine: Engine) -> tuple[network_pb2_grpc.NetworkServiceStub,
                                        image_pb2_grpc.ImageServiceStub]:
    return (network_pb2_grpc.NetworkServiceStub(
                grpc.insecure_channel(f"unix://{engine.exec_root}/network.sock")),
            image_pb2_grpc.ImageServiceStub(
                grpc.insecure_channel(f"unix://{engine.exec_root}/image.sock")))


def test_a_restarted_cri_service_sweeps_what_of_its_own_it_does_not_know(
        engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        pods: list[str], log_dir: Path) -> None:
    """What a RunPodSandbox or CreateContainer killed half-way leaves: a pod
    network and an image-volume lease owned by "cri" that no record names."""
    networks, image_service = peer_stubs(engine)
    known = Pod(runtime, pods, pod_config("known", log_dir))
    address = known.ip
    stray, stray_lease = "2" * 64, "cri-image-volume-stray-0"
    netns = networks.CreateSandbox(network_pb2.CreateSandboxRequest(
        container_id=stray, network_mode="none", owner="cri")).netns_path
    image_service.AcquireRootfs(image_pb2.AcquireRootfsRequest(
        image=images, holder=stray_lease, owner="cri"))
    assert netns and cri_leases(engine) == [stray_lease]
    try:
        kill_service(engine, "cri")
        wait_for(lambda: not networks.GetSandbox(
            network_pb2.GetSandboxRequest(container_id=stray)).netns_path,
            timeout=60, message="the stray pod network to be swept")
        assert not Path(netns).exists()
        wait_for(lambda: cri_leases(engine) == [], timeout=60,
                 message="the stray image-volume lease to be swept")
    finally:
        with contextlib.suppress(grpc.RpcError):
            networks.DestroySandbox(network_pb2.DestroySandboxRequest(container_id=stray))
        with contextlib.suppress(grpc.RpcError):
            image_service.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=stray_lease))
    kept = networks.GetSandbox(network_pb2.GetSandboxRequest(container_id=known.id))
    assert kept.netns_path
    assert known.ip == address
    shell = known.start("shell", images, "exec sleep 1000")
    assert known.exec(shell, "ip", "-4", "-o", "addr", "show", "eth0").exit_code == 0


@pytest.mark.parametrize("service", ["network", "image"])
def test_the_cri_service_sweeps_a_restarted_peer(
        engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        pods: list[str], log_dir: Path, service: str) -> None:
    """A peer that restarts may have missed releases while it was away: the
    running cri service pushes its pods and image volumes to it once it is
    back, and its own pod stays."""
    networks, image_service = peer_stubs(engine)
    known = Pod(runtime, pods, pod_config(f"kept-{service}", log_dir))
    stray, stray_lease = secrets.token_hex(32), f"cri-image-volume-stray-{service}-0"
    if service == "network":
        netns = networks.CreateSandbox(network_pb2.CreateSandboxRequest(
            container_id=stray, network_mode="none", owner="cri")).netns_path
        assert netns
    else:
        image_service.AcquireRootfs(image_pb2.AcquireRootfsRequest(
            image=images, holder=stray_lease, owner="cri"))
        assert cri_leases(engine) == [stray_lease]
    try:
        kill_service(engine, service)
        if service == "network":
            wait_for(lambda: not networks.GetSandbox(
                network_pb2.GetSandboxRequest(container_id=stray)).netns_path,
                timeout=60, message="the stray pod network to be swept")
            assert not Path(netns).exists()
        else:
            wait_for(lambda: cri_leases(engine) == [], timeout=60,
                     message="the stray image-volume lease to be swept")
    finally:
        with contextlib.suppress(grpc.RpcError):
            networks.DestroySandbox(network_pb2.DestroySandboxRequest(container_id=stray))
        with contextlib.suppress(grpc.RpcError):
            image_service.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=stray_lease))
    assert networks.GetSandbox(network_pb2.GetSandboxRequest(container_id=known.id)).netns_path
    shell = known.start("shell", images, "exec sleep 1000")
    assert known.exec(shell, "ip", "-4", "-o", "addr", "show", "eth0").exit_code == 0
