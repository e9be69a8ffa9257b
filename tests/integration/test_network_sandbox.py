"""The network service over gRPC: sandboxes, ports, user networks, DNS, restart.

Real netlink and nftables; traffic only between the host and the namespaces
these tests create.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from berth.network.v1 import network_pb2 as pb
from berth.types.v1 import types_pb2, types_pb2_grpc
from tests.support.engine import BERTH, REPO
from tests.support.network import (
    NetworkService,
    links,
    run_in,
    running_network_service,
    serve_http,
)


@pytest.fixture(scope="module")
def service() -> Iterator[NetworkService]:
    with running_network_service() as running:
        yield running


@pytest.fixture
def stub(service: NetworkService):
    stub = service.stub()
    yield stub
    service.end_children()
    for n in range(80):
        stub.ForgetContainer(pb.ForgetContainerRequest(container_id=cid(n)))
    for network in stub.List(pb.ListNetworksRequest()).networks:
        if network.name not in ("bridge", "host", "none"):
            stub.Remove(pb.RemoveNetworkRequest(id=network.id))


def _sandbox_ids(service: NetworkService) -> list[str]:
    netns_dir = service.root / "run" / "netns"
    return [p.name for p in netns_dir.iterdir()] if netns_dir.exists() else []


def cid(n: int) -> str:
    return f"{n:064x}"


def sandbox(stub, n: int, **kwargs) -> pb.Sandbox:
    return stub.CreateSandbox(pb.CreateSandboxRequest(
        container_id=cid(n), container_name=f"c{n}", hostname=cid(n)[:12], **kwargs))


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def veths(service: NetworkService) -> set[str]:
    """Host ends of this service's endpoints (other engines share the host)."""
    return {name for name in links() if name.startswith(f"{service.prefix}v")}


def host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]


def test_default_networks_and_bridge(service: NetworkService, stub) -> None:
    names = {n.name: n for n in stub.List(pb.ListNetworksRequest()).networks}
    assert {"bridge", "host", "none"} <= names.keys()
    assert names["bridge"].driver == "bridge" and names["none"].driver == "null"
    assert f"{service.prefix}0" in links()
    assert names["bridge"].ipam.config[0].gateway.endswith(".1")


def test_bridge_sandbox_wiring(service: NetworkService, stub) -> None:
    box = sandbox(stub, 1)
    endpoint = box.endpoints[0]
    assert endpoint.network_name == "bridge"
    octets = [int(o) for o in endpoint.ip_address.split(".")]
    assert endpoint.mac_address == "02:42:" + ":".join(f"{o:02x}" for o in octets)
    assert Path(box.netns_path).exists()
    addr = run_in(box.netns_path, "busybox", "ip", "addr").stdout
    assert f"{endpoint.ip_address}/{endpoint.ip_prefix_len}" in addr and "eth0" in addr
    route = run_in(box.netns_path, "busybox", "ip", "route").stdout
    assert f"default via {endpoint.gateway}" in route
    ping = run_in(box.netns_path, "busybox", "ping", "-c1", "-W2", endpoint.gateway)
    assert ping.returncode == 0
    assert f"{endpoint.ip_address}\t{cid(1)[:12]}" in box.hosts
    assert "nameserver" in box.resolv_conf and "127.0.0." not in box.resolv_conf
    assert stub.GetSandbox(pb.GetSandboxRequest(container_id=cid(1))).netns_path == box.netns_path

    stub.DestroySandbox(pb.DestroySandboxRequest(container_id=cid(1)))
    assert not Path(box.netns_path).exists()
    assert not veths(service)


def test_none_and_host_modes(stub) -> None:
    none = sandbox(stub, 2, network_mode="none")
    assert [(e.network_name, e.ip_address) for e in none.endpoints] == [("none", "")]
    addr = run_in(none.netns_path, "busybox", "ip", "-o", "link").stdout
    assert "lo:" in addr and "eth0" not in addr
    default = sandbox(stub, 8)
    joined = sandbox(stub, 14, network_mode="container:c8", container_netns_path=default.netns_path)
    assert joined.netns_path == default.netns_path and joined.hosts == default.hosts
    stub.ForgetContainer(pb.ForgetContainerRequest(container_id=cid(14)))
    assert Path(default.netns_path).exists()
    host = sandbox(stub, 3, network_mode="host")
    assert host.netns_path == ""
    assert [(e.network_name, e.ip_address) for e in host.endpoints] == [("host", "")]
    assert host.resolv_conf == Path("/etc/resolv.conf").read_text()


def test_published_ports(service: NetworkService, stub, tmp_path: Path) -> None:
    box = sandbox(stub, 4, port_mappings=[
        pb.PortMapping(container_port="80/tcp", host_port="0"),
        pb.PortMapping(container_port="80/tcp", host_ip="127.0.0.1", host_port=""),
    ], publish_all_ports=True, exposed_ports=["80/tcp", "53/udp"])
    ports = {(p.container_port, p.host_ip): p.host_port for p in box.ports}
    assert set(ports) == {("80/tcp", "0.0.0.0"), ("80/tcp", "127.0.0.1"), ("53/udp", "0.0.0.0")}
    assert all(port > 0 for port in ports.values())
    serve_http(service, box, tmp_path, "published")
    assert fetch(f"http://127.0.0.1:{ports[('80/tcp', '0.0.0.0')]}/") == "published"
    assert fetch(f"http://{host_address()}:{ports[('80/tcp', '0.0.0.0')]}/") == "published"
    assert fetch(f"http://127.0.0.1:{ports[('80/tcp', '127.0.0.1')]}/") == "published"


UDP_ECHO = """
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 5353))
while True:
    data, peer = sock.recvfrom(2048)
    sock.sendto(data.upper(), peer)
"""


def test_published_udp_port(service: NetworkService, stub) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        # A flow that started before the port was published must reach the
        # container once it is (its conntrack entry is dropped).
        client.sendto(b"early", ("127.0.0.1", port))
        box = sandbox(stub, 9, port_mappings=[pb.PortMapping(
            container_port="5353/udp", host_ip="127.0.0.1", host_port=str(port))])
        service.spawn(box.netns_path, sys.executable, "-c", UDP_ECHO)
        client.settimeout(0.5)
        deadline = time.monotonic() + 10
        while True:
            client.sendto(b"ping", ("127.0.0.1", port))
            try:
                assert client.recv(100) == b"PING"
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no UDP echo through the published port"


def test_masquerade_and_host_binding_options(service: NetworkService, stub,
                                              tmp_path: Path) -> None:
    stub.Create(pb.CreateNetworkRequest(name="plain", options={
        "com.docker.network.bridge.enable_ip_masquerade": "false",
        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"},
        ipam=pb.IPAM(config=[pb.IPAMConfig(subnet="10.231.40.0/24")])))
    box = sandbox(stub, 29, network_mode="plain",
                  port_mappings=[pb.PortMapping(container_port="80/tcp")])
    assert box.ports[0].host_ip == "127.0.0.1"
    serve_http(service, box, tmp_path, "local only")
    assert fetch(f"http://127.0.0.1:{box.ports[0].host_port}/") == "local only"
    rules = subprocess.run(["nft", "list", "table", "ip", service.prefix], capture_output=True,
                           text=True).stdout
    assert "10.231.40.0/24 oifname" not in rules


def test_port_in_use_fails_and_cleans_up(service: NetworkService, stub) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = veths(service)
        with pytest.raises(grpc.RpcError) as failure:
            sandbox(stub, 5, port_mappings=[pb.PortMapping(container_port="80/tcp",
                                                           host_port=str(port))])
        assert "address already in use" in failure.value.details()
        assert veths(service) == before
        assert cid(5) not in _sandbox_ids(service)
    first = sandbox(stub, 6, port_mappings=[pb.PortMapping(container_port="80", host_port="0")])
    taken = str(first.ports[0].host_port)
    with pytest.raises(grpc.RpcError):
        sandbox(stub, 7, port_mappings=[pb.PortMapping(container_port="80", host_port=taken)])
    assert cid(7) not in _sandbox_ids(service)


def test_user_networks_dns_isolation(service: NetworkService, stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="front"))
    stub.Create(pb.CreateNetworkRequest(name="back"))
    a = sandbox(stub, 10, network_mode="front")
    b = sandbox(stub, 11, network_mode="front",
                endpoints=[pb.EndpointRequest(network="front", aliases=["web"])])
    other = sandbox(stub, 12, network_mode="back")
    default = sandbox(stub, 13)
    nameserver = a.resolv_conf.split()[1]
    assert nameserver == "127.0.0.11" and "options ndots:0" in a.resolv_conf
    b_ip = b.endpoints[0].ip_address
    for name in ("c11", "web", cid(11)[:12]):
        lookup = run_in(a.netns_path, "busybox", "nslookup", name, nameserver)
        assert b_ip in lookup.stdout, lookup.stdout + lookup.stderr
    assert run_in(a.netns_path, "busybox", "ping", "-c1", "-W2", b_ip).returncode == 0
    reverse = run_in(a.netns_path, "busybox", "nslookup", b_ip, nameserver)
    assert "c11.front" in reverse.stdout, reverse.stdout + reverse.stderr
    stub.RenameContainer(pb.RenameContainerRequest(container_id=cid(11), new_name="renamed"))
    lookup = run_in(a.netns_path, "busybox", "nslookup", "renamed", nameserver)
    assert b_ip in lookup.stdout, lookup.stdout + lookup.stderr
    assert b_ip not in run_in(a.netns_path, "busybox", "nslookup", "c11", nameserver).stdout
    # Another network, and the default bridge, cannot reach it nor resolve it.
    assert run_in(other.netns_path, "busybox", "ping", "-c1", "-W1", b_ip).returncode != 0
    assert run_in(default.netns_path, "busybox", "ping", "-c1", "-W1", b_ip).returncode != 0
    lookup = run_in(other.netns_path, "busybox", "nslookup", "c11",
                    other.resolv_conf.split()[1])
    assert b_ip not in lookup.stdout

    stub.Disconnect(pb.DisconnectRequest(container_id=cid(11), network="front"))
    assert run_in(a.netns_path, "busybox", "ping", "-c1", "-W1", b_ip).returncode != 0
    assert "eth0" not in run_in(b.netns_path, "busybox", "ip", "-o", "link").stdout
    reply = stub.Connect(pb.ConnectRequest(container_id=cid(11), container_name="c11",
                                           endpoint=pb.EndpointRequest(network="back")))
    assert reply.endpoint.network_name == "back"
    back_ip = reply.endpoint.ip_address
    assert run_in(other.netns_path, "busybox", "ping", "-c1", "-W2", back_ip).returncode == 0
    with pytest.raises(grpc.RpcError) as twice:
        stub.Connect(pb.ConnectRequest(container_id=cid(11), container_name="c11",
                                       endpoint=pb.EndpointRequest(network="back")))
    assert twice.value.details() == "endpoint with name c11 already exists in network back"
    with pytest.raises(grpc.RpcError) as busy:
        stub.Remove(pb.RemoveNetworkRequest(id="back"))
    assert "has active endpoints" in busy.value.details()


OWN_DNS_SERVER = """
import socket
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    socket.socket(socket.AF_INET, kind).bind(("0.0.0.0", 53))
print("bound")
"""


def test_embedded_resolver_on_127_0_0_11(stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="named"))
    web = sandbox(stub, 30, network_mode="named",
                  endpoints=[pb.EndpointRequest(network="named", aliases=["web"])])
    # A container on the default bridge keeps the host's servers until its
    # first user network, which brings the resolver and rewrites resolv.conf.
    late = sandbox(stub, 31, dns_search=["example.test"])
    assert "127.0.0.11" not in late.resolv_conf
    reply = stub.Connect(pb.ConnectRequest(container_id=cid(31), container_name="c31",
                                           endpoint=pb.EndpointRequest(network="named")))
    assert reply.resolv_conf == ("nameserver 127.0.0.11\nsearch example.test\n"
                                 "options ndots:0\n")
    lookup = run_in(late.netns_path, "busybox", "nslookup", "web", "127.0.0.11")
    assert web.endpoints[0].ip_address in lookup.stdout, lookup.stdout + lookup.stderr
    # Port 53 stays free for a DNS server of the container's own.
    own = run_in(web.netns_path, sys.executable, "-c", OWN_DNS_SERVER)
    assert own.stdout == "bound\n", own.stderr


def test_internal_and_icc(stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="inner", internal=True))
    stub.Create(pb.CreateNetworkRequest(
        name="quiet", options={"com.docker.network.bridge.enable_icc": "false"}))
    inner = sandbox(stub, 20, network_mode="inner")
    assert "default" not in run_in(inner.netns_path, "busybox", "ip", "route").stdout
    q1 = sandbox(stub, 21, network_mode="quiet")
    q2 = sandbox(stub, 22, network_mode="quiet")
    target = q2.endpoints[0].ip_address
    assert run_in(q1.netns_path, "busybox", "ping", "-c1", "-W1", target).returncode != 0
    assert run_in(q1.netns_path, "busybox", "ping", "-c1", "-W2",
                  q1.endpoints[0].gateway).returncode == 0


def test_bridge_options(service: NetworkService, stub) -> None:
    name = f"{service.prefix}x"
    stub.Create(pb.CreateNetworkRequest(name="tuned", options={
        "com.docker.network.driver.mtu": "1400", "com.docker.network.bridge.name": name},
        ipam=pb.IPAM(config=[pb.IPAMConfig(subnet="10.231.20.0/24",
                                           ip_range="10.231.20.128/25")])))
    assert name in links()
    box = sandbox(stub, 26, network_mode="tuned")
    assert box.endpoints[0].ip_address == "10.231.20.128"
    assert "mtu 1400" in run_in(box.netns_path, "busybox", "ip", "link", "show", "eth0").stdout
    stub.ForgetContainer(pb.ForgetContainerRequest(container_id=cid(26)))
    stub.Remove(pb.RemoveNetworkRequest(id="tuned"))
    assert name not in links()


def test_ipv6_network(stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="dual", enable_ipv6=True, ipam=pb.IPAM(config=[
        pb.IPAMConfig(subnet="fd00:b3:7::/64")])))
    auto = stub.Create(pb.CreateNetworkRequest(name="ula", enable_ipv6=True)).id
    ula = [c.subnet for c in stub.Inspect(pb.InspectNetworkRequest(id=auto)).ipam.config]
    assert len(ula) == 2 and ula[1].startswith("fd") and ula[1].endswith("::/64")
    a = sandbox(stub, 27, network_mode="dual")
    b = sandbox(stub, 28, network_mode="dual")
    assert a.endpoints[0].global_ipv6_address == "fd00:b3:7::2"
    assert a.endpoints[0].ipv6_gateway == "fd00:b3:7::1"
    target = b.endpoints[0].global_ipv6_address
    assert target == "fd00:b3:7::3" and b.endpoints[0].global_ipv6_prefix_len == 64
    assert run_in(a.netns_path, "busybox", "ping", "-6", "-c1", "-W2", target).returncode == 0
    assert "default via fd00:b3:7::1" in run_in(a.netns_path, "busybox", "ip", "-6",
                                                "route").stdout
    lookup = run_in(a.netns_path, "busybox", "nslookup", "-type=AAAA", "c28",
                    a.resolv_conf.split()[1])
    assert target in lookup.stdout, lookup.stdout + lookup.stderr
    network = stub.Inspect(pb.InspectNetworkRequest(id="dual"))
    assert network.containers[cid(28)].ipv6_address == f"{target}/64"


def test_default_route_moves_on_disconnect(stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="first"))
    second = stub.Create(pb.CreateNetworkRequest(name="second")).id
    box = sandbox(stub, 25, network_mode="first",
                  endpoints=[pb.EndpointRequest(network="second")])
    assert [e.network_name for e in box.endpoints] == ["first", "second"]
    links_inside = run_in(box.netns_path, "busybox", "ip", "-o", "link").stdout
    assert "eth0" in links_inside and "eth1" in links_inside
    stub.Disconnect(pb.DisconnectRequest(container_id=cid(25), network="first"))
    gateway = stub.Inspect(pb.InspectNetworkRequest(id=second)).ipam.config[0].gateway
    route = run_in(box.netns_path, "busybox", "ip", "route").stdout
    assert f"default via {gateway}" in route
    assert run_in(box.netns_path, "busybox", "ping", "-c1", "-W2", gateway).returncode == 0


def test_bad_input(stub) -> None:
    def error(call, request) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as failure:
            call(request)
        return failure.value.code(), failure.value.details()

    stub.Create(pb.CreateNetworkRequest(name="dup", ipam=pb.IPAM(config=[
        pb.IPAMConfig(subnet="10.231.7.0/24")])))
    assert error(stub.Create, pb.CreateNetworkRequest(name="dup"))[1] == \
        "network with name dup already exists"
    code, message = error(stub.Create, pb.CreateNetworkRequest(name="x y"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == 'invalid network name "x y": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed'
    code, message = error(stub.Create, pb.CreateNetworkRequest(name="xy", ipam=pb.IPAM(
        config=[pb.IPAMConfig(subnet="10.231.7.128/25")])))
    assert "Pool overlaps with other one on this address space" in message
    code, message = error(stub.Create, pb.CreateNetworkRequest(name="xy", ipam=pb.IPAM(
        config=[pb.IPAMConfig(subnet="10.231.8.0/24", gateway="10.9.9.9")])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, message = error(stub.Remove, pb.RemoveNetworkRequest(id="bridge"))
    assert message == "bridge is a pre-defined network and cannot be removed"
    code, message = error(stub.Inspect, pb.InspectNetworkRequest(id="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and message == "network nope not found"
    code, message = error(stub.CreateSandbox, pb.CreateSandboxRequest(
        container_id=cid(30), network_mode="dup",
        endpoints=[pb.EndpointRequest(network="dup", ipv4_address="10.99.0.5")]))
    assert "It does not belong to any of this network's subnets" in message
    code, message = error(stub.CreateSandbox, pb.CreateSandboxRequest(
        container_id=cid(31), endpoints=[pb.EndpointRequest(network="bridge",
                                                            ipv4_address="172.17.0.9")]))
    assert message == "user specified IP address is supported on user defined networks only"
    static = sandbox(stub, 32, network_mode="dup",
                     endpoints=[pb.EndpointRequest(network="dup", ipv4_address="10.231.7.50")])
    assert static.endpoints[0].ip_address == "10.231.7.50"
    code, message = error(stub.CreateSandbox, pb.CreateSandboxRequest(
        container_id=cid(33), network_mode="dup",
        endpoints=[pb.EndpointRequest(network="dup", ipv4_address="10.231.7.50")]))
    assert message == "Address already in use"
    code, message = error(stub.CreateSandbox, pb.CreateSandboxRequest(
        container_id=cid(36), endpoints=[pb.EndpointRequest(network="bridge", aliases=["x"])]))
    assert message == ("network-scoped alias is supported only for containers in user defined "
                       "networks")
    custom_mac = sandbox(stub, 37, network_mode="dup", endpoints=[
        pb.EndpointRequest(network="dup", mac_address="02:aa:bb:cc:dd:ee")])
    assert custom_mac.endpoints[0].mac_address == "02:aa:bb:cc:dd:ee"
    assert "02:aa:bb:cc:dd:ee" in run_in(custom_mac.netns_path, "busybox", "ip", "link",
                                         "show", "eth0").stdout
    sandbox(stub, 35)
    code, message = error(stub.Connect, pb.ConnectRequest(
        container_id=cid(35), container_name="c35",
        endpoint=pb.EndpointRequest(network="dup", ipv4_address="10.231.7.50")))
    assert message == "Address already in use"
    left = stub.GetSandbox(pb.GetSandboxRequest(container_id=cid(35)))
    assert [e.network_name for e in left.endpoints] == ["bridge"]
    code, message = error(stub.CreateSandbox, pb.CreateSandboxRequest(
        container_id=cid(34), network_mode="missing"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_addresses_released_over_cycles(stub) -> None:
    seen = set()
    for _ in range(15):
        box = sandbox(stub, 40)
        seen.add(box.endpoints[0].ip_address)
        stub.DestroySandbox(pb.DestroySandboxRequest(container_id=cid(40)))
    assert len(seen) == 1


def test_restart_readopts_running_sandboxes(service: NetworkService, stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="kept"))
    box = sandbox(stub, 50, network_mode="kept",
                  port_mappings=[pb.PortMapping(container_port="80/tcp", host_port="0")])
    service.stop()
    assert Path(box.netns_path).exists()
    service.start()
    stub = service.stub()
    again = stub.GetSandbox(pb.GetSandboxRequest(container_id=cid(50)))
    assert again.endpoints[0].ip_address == box.endpoints[0].ip_address
    assert again.ports[0].host_port == box.ports[0].host_port
    peer = sandbox(stub, 51, network_mode="kept")
    assert peer.endpoints[0].ip_address != box.endpoints[0].ip_address
    lookup = run_in(peer.netns_path, "busybox", "nslookup", "c50", peer.resolv_conf.split()[1])
    assert box.endpoints[0].ip_address in lookup.stdout
    lookup = run_in(box.netns_path, "busybox", "nslookup", "c51", "127.0.0.11")
    assert peer.endpoints[0].ip_address in lookup.stdout, lookup.stdout + lookup.stderr


def test_two_engines_do_not_collide(service: NetworkService) -> None:
    with running_network_service() as second:
        ours = service.stub().Inspect(pb.InspectNetworkRequest(id="bridge"))
        theirs = second.stub().Inspect(pb.InspectNetworkRequest(id="bridge"))
        assert ours.ipam.config[0].subnet != theirs.ipam.config[0].subnet
        assert second.prefix != service.prefix
        assert f"{second.prefix}0" in links()
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        assert f"ip {second.prefix}" in tables and f"ip {service.prefix}" in tables
    assert f"{second.prefix}0" not in links()


class FakeUpstream:
    """A DNS server on a random loopback address answering every A query with
    192.0.2.123 (port 53 is fixed, so the address keeps parallel runs apart)."""

    def __init__(self) -> None:
        self.address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.53"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, 53))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = DNSRecord.parse(data)
            reply = query.reply()
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.123"), ttl=5))
            self.sock.sendto(reply.pack(), peer)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


TCP_QUERY = """
import socket, struct, sys
from dnslib import DNSRecord
query = DNSRecord.question(sys.argv[2]).pack()
with socket.create_connection((sys.argv[1], 53), timeout=5) as sock:
    sock.sendall(struct.pack("!H", len(query)) + query)
    stream = sock.makefile("rb")
    (length,) = struct.unpack("!H", stream.read(2))
    print(DNSRecord.parse(stream.read(length)).a.rdata)
"""


UDP_QUERY = """
import socket, sys
from dnslib import DNSRecord, RCODE
query = DNSRecord.question(sys.argv[2], sys.argv[3])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(5)
    sock.sendto(query.pack(), (sys.argv[1], 53))
    reply = DNSRecord.parse(sock.recv(4096))
print(RCODE.get(reply.header.rcode), *sorted(str(rr.rdata) for rr in reply.rr))
"""


def test_explicit_ndots_keeps_single_labels_from_upstream(stub) -> None:
    """As Docker's resolver: with ndots in the container's options (at create
    or when a connect brings the resolver), an A/AAAA query of an unknown
    name without a dot is answered empty, not forwarded; dotted names and
    containers without the option are forwarded."""
    stub.Create(pb.CreateNetworkRequest(name="dotted"))
    upstream = FakeUpstream()
    try:
        set_at_create = sandbox(stub, 56, network_mode="dotted", dns=[upstream.address],
                                dns_options=["ndots:2"])
        set_before_connect = sandbox(stub, 57, dns=[upstream.address],
                                     dns_options=["ndots:0"])
        stub.Connect(pb.ConnectRequest(container_id=cid(57), container_name="c57",
                                       endpoint=pb.EndpointRequest(network="dotted")))
        unset = sandbox(stub, 58, network_mode="dotted", dns=[upstream.address])

        def ask(box: pb.Sandbox, name: str, qtype: str = "A") -> str:
            asked = run_in(box.netns_path, sys.executable, "-c", UDP_QUERY, "127.0.0.11",
                           name, qtype)
            return asked.stdout.strip() or asked.stderr

        assert "options ndots:2\n" in set_at_create.resolv_conf
        for box in (set_at_create, set_before_connect):
            assert ask(box, "nothere") == "NOERROR"
            assert ask(box, "nothere", "AAAA") == "NOERROR"
            assert ask(box, "nothere.test") == "NOERROR 192.0.2.123"
            assert ask(box, "c58") == f"NOERROR {unset.endpoints[0].ip_address}"
        assert ask(unset, "nothere") == "NOERROR 192.0.2.123"
    finally:
        upstream.close()


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name))


def test_dns_forwarding_and_metrics(service: NetworkService, stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="fwd"))
    upstream = FakeUpstream()
    try:
        box = sandbox(stub, 55, network_mode="fwd", dns=[upstream.address])
        nameserver = box.resolv_conf.split()[1]
        lookup = run_in(box.netns_path, "busybox", "nslookup", "example.test", nameserver)
        assert "192.0.2.123" in lookup.stdout, lookup.stdout + lookup.stderr
        assert run_in(box.netns_path, "busybox", "nslookup", "c55",
                      nameserver).returncode == 0
        over_tcp = run_in(box.netns_path, sys.executable, "-c", TCP_QUERY, nameserver, "c55")
        assert over_tcp.stdout.strip() == box.endpoints[0].ip_address, over_tcp.stderr
        stub.Create(pb.CreateNetworkRequest(name="sealed", internal=True))
        sealed = sandbox(stub, 54, network_mode="sealed", dns=[upstream.address])
        lookup = run_in(sealed.netns_path, "busybox", "nslookup", "example.test",
                        sealed.resolv_conf.split()[1])
        assert "192.0.2.123" not in lookup.stdout
    finally:
        upstream.close()
    info = types_pb2_grpc.InfoStub(grpc.insecure_channel(f"unix://{service.socket}"))
    url = info.GetServiceInfo(types_pb2.GetServiceInfoRequest()).metrics_url
    assert _metric(url, 'berth_network_dns_queries_total{outcome="forwarded"}') >= 1
    assert _metric(url, 'berth_network_dns_queries_total{outcome="answered"}') >= 1
    assert _metric(url, "berth_network_endpoints ") >= 1
    assert _metric(url, 'berth_network_free_addresses{network="fwd"}') == 65534 - 2


def test_parallel_sandboxes_get_distinct_addresses(stub) -> None:
    stub.Create(pb.CreateNetworkRequest(name="busy"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        boxes = list(pool.map(lambda n: sandbox(stub, n, network_mode="busy"), range(60, 76)))
    addresses = [b.endpoints[0].ip_address for b in boxes]
    assert len(set(addresses)) == len(addresses)
    for n in range(60, 76):
        stub.ForgetContainer(pb.ForgetContainerRequest(container_id=cid(n)))


def test_killed_service_recovers(service: NetworkService, stub) -> None:
    kept = sandbox(stub, 56, port_mappings=[pb.PortMapping(container_port="80", host_port="0")])
    lost = sandbox(stub, 57)
    assert service.process is not None
    service.process.kill()
    service.process.wait()
    # The container of `lost` went away while the service was down.
    subprocess.run(["umount", lost.netns_path], check=True)
    Path(lost.netns_path).unlink()
    service.start()
    stub = service.stub()
    again = stub.GetSandbox(pb.GetSandboxRequest(container_id=cid(56)))
    assert again.endpoints[0].ip_address == kept.endpoints[0].ip_address
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("0.0.0.0", kept.ports[0].host_port))
    assert stub.GetSandbox(pb.GetSandboxRequest(container_id=cid(57))).netns_path == ""
    lost_veth_gone = sandbox(stub, 58)
    assert lost_veth_gone.endpoints[0].ip_address == lost.endpoints[0].ip_address


def test_berth_ctl_network(service: NetworkService) -> None:
    def ctl(*args: str) -> str:
        result = subprocess.run(
            [*BERTH, "ctl", "--data-root", str(service.root / "data"), "--exec-root",
             str(service.root / "run"), "network", *args],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    network_id = ctl("create", "--subnet", "10.231.30.0/24", "--label", "via=ctl",
                     "ctlnet").strip()
    table = ctl("ls", "--filter", "label=via=ctl")
    assert network_id[:12] in table and "10.231.30.0/24" in table
    assert '"name": "ctlnet"' in ctl("inspect", "ctlnet")
    assert ctl("rm", "ctlnet").strip() == "ctlnet"
    assert "ctlnet" not in ctl("ls")
