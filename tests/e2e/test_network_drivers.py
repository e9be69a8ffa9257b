"""Network create options and the macvlan/ipvlan drivers through the real
docker CLI and SDK, against Docker's behaviour: what create honours and
reports, what a dockerd outside a swarm refuses, config-only networks,
endpoint link-local addresses and GwPriority, and containers on a parent's
segment. Parents are veth pairs the test makes (one end in a namespace of
its own), removed afterwards."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from tests.support.engine import Engine


def error_of(engine: Engine, *args: str) -> str:
    result = engine.docker(*args, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr.decode()


def inspect_network(engine: Engine, name: str) -> dict:
    return json.loads(engine.docker("network", "inspect", name).stdout)[0]


def run_output(engine: Engine, *args: str) -> str:
    return engine.docker("run", "--rm", *args).stdout.decode()


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def clean(engine: Engine):
    yield engine
    engine.clean()


@dataclass
class Segment:
    """A veth pair: `parent` on the host, its peer in `netns` with `address`."""
    parent: str
    netns: str
    address: str

    def ping_from_peer(self, target: str) -> bool:
        return subprocess.run(["ip", "netns", "exec", self.netns, "busybox", "ping", "-c", "1",
                               "-W", "2", target], capture_output=True).returncode == 0


@pytest.fixture
def segment() -> Iterator[Segment]:
    tag = os.urandom(3).hex()
    parent, peer, netns = f"nfpar{tag}", f"nfpeer{tag}", f"nfseg{tag}"
    ip("netns", "add", netns)
    try:
        ip("link", "add", parent, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", netns)
        ip("-n", netns, "addr", "add", "10.198.3.1/24", "dev", peer)
        ip("-n", netns, "link", "set", peer, "up")
        ip("link", "set", parent, "up")
        yield Segment(parent, netns, "10.198.3.1")
    finally:
        subprocess.run(["ip", "link", "del", parent], capture_output=True)
        ip("netns", "del", netns)


# -- create: what is honoured and reported ------------------------------------

def test_create_reports_what_it_was_given(clean: Engine, busybox: str) -> None:
    engine = clean
    bridge = "nfbr" + os.urandom(3).hex()
    engine.docker("network", "create", "--attachable", "--label", "tier=back",
                  "--subnet", "10.198.1.0/29", "--aux-address", "router=10.198.1.2",
                  "--ipam-opt", "flavour=plain", "-o", f"com.docker.network.bridge.name={bridge}",
                  "-o", "com.docker.network.driver.mtu=1400",
                  "-o", "com.docker.network.bridge.host_binding_ipv4=127.0.0.1", "reported")
    info = inspect_network(engine, "reported")
    assert info["Scope"] == "local" and info["Attachable"] is True
    assert info["EnableIPv4"] is True and info["EnableIPv6"] is False
    assert info["ConfigOnly"] is False and info["ConfigFrom"] == {"Network": ""}
    assert info["Labels"] == {"tier": "back"}
    assert info["IPAM"]["Options"] == {"flavour": "plain"}
    assert info["IPAM"]["Config"] == [{"Subnet": "10.198.1.0/29", "Gateway": "10.198.1.1",
                                       "AuxiliaryAddresses": {"router": "10.198.1.2"}}]
    assert info["Options"]["com.docker.network.bridge.name"] == bridge

    # The auxiliary address is never handed out; the MTU is the bridge's and the veths'.
    inside = run_output(engine, "--network", "reported", busybox, "sh", "-c",
                        "ip -4 -o addr show eth0; cat /sys/class/net/eth0/mtu")
    assert "10.198.1.3/29" in inside and inside.split()[-1] == "1400"
    with open(f"/sys/class/net/{bridge}/mtu") as mtu:
        assert mtu.read().strip() == "1400"
    # host_binding_ipv4 is the address of ports published without one.
    engine.docker("run", "-d", "--name", "bound", "--network", "reported", "-p", "80",
                  busybox, "sleep", "60")
    assert engine.docker("port", "bound", "80").stdout.decode().startswith("127.0.0.1:")


def test_a_dockerd_outside_a_swarm_refuses(clean: Engine) -> None:
    engine = clean
    assert 'This node is not a swarm manager. Use "docker swarm init"' in error_of(
        engine, "network", "create", "-d", "overlay", "over")
    assert "cannot create a swarm scoped network when swarm is not active" in error_of(
        engine, "network", "create", "--scope", "swarm", "swarmy")
    assert "IPv4 or IPv6 must be enabled" in error_of(
        engine, "network", "create", "--ipv4=false", "nothing")
    client = engine.client()
    with pytest.raises(docker.errors.APIError) as refused:
        client.networks.create("ingressy", ingress=True)
    assert refused.value.status_code == 403
    assert "Ingress network can only be global scope network" in str(refused.value)
    names = engine.docker("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
    assert not {"over", "swarmy", "nothing", "ingressy"} & set(names)


def test_ipv6_only_network(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "--ipv4=false", "--ipv6", "--subnet",
                  "fd42:198:7::/64", "sixonly")
    info = inspect_network(engine, "sixonly")
    assert info["EnableIPv4"] is False and info["EnableIPv6"] is True
    assert info["IPAM"]["Config"] == [{"Subnet": "fd42:198:7::/64", "Gateway": "fd42:198:7::1"}]
    engine.docker("run", "-d", "--name", "six", "--network", "sixonly", busybox,
                  "sleep", "120")
    endpoint = json.loads(engine.docker("inspect", "six").stdout)[0]["NetworkSettings"][
        "Networks"]["sixonly"]
    assert endpoint["IPAddress"] == "" and endpoint["GlobalIPv6Address"] == "fd42:198:7::2"
    inside = engine.docker("exec", "six", "sh", "-c",
                           "ip -4 -o addr show eth0; ip -6 route").stdout.decode()
    assert "inet " not in inside and "default via fd42:198:7::1" in inside
    run_output(engine, "--network", "sixonly", busybox, "ping", "-6", "-c", "1", "-W", "2",
               "fd42:198:7::2")
    assert "IPv4 is disabled" in error_of(engine, "network", "create", "--ipv4=false",
                                          "--ipv6", "--subnet", "10.198.8.0/24", "mixed")


def test_static_ipv6_addresses_and_endpoint_driver_options(clean: Engine,
                                                           busybox: str) -> None:
    """--ip6 on an IPv6 network with the user's subnet, as dockerd 20.10: the
    address, its IPAMConfig, and dockerd's refusals; endpoint driver options
    are recorded and shown (dockerd's bridge driver applies none of these)."""
    engine = clean
    engine.docker("network", "create", "--ipv6", "--subnet", "10.198.9.0/24", "--subnet",
                  "fd42:198:9::/64", "dual")
    engine.docker("network", "create", "--subnet", "10.198.10.0/24", "four")
    engine.docker("network", "create", "--ipv6", "ula")
    engine.docker("run", "-d", "--name", "fixed6", "--network", "dual", "--ip6",
                  "fd42:198:9::10", busybox, "sleep", "120")
    endpoint = json.loads(engine.docker("inspect", "fixed6").stdout)[0]["NetworkSettings"][
        "Networks"]["dual"]
    assert endpoint["IPAMConfig"] == {"IPv6Address": "fd42:198:9::10"}
    assert endpoint["GlobalIPv6Address"] == "fd42:198:9::10"
    inside = engine.docker("exec", "fixed6", "ip", "-6", "-o", "addr", "show", "eth0")
    assert "fd42:198:9::10/64" in inside.stdout.decode()
    unconfigured = ("user specified IP address is supported only when connecting to "
                    "networks with user configured subnets")
    assert unconfigured in error_of(engine, "network", "connect", "--ip6", "fd42:198:9::11",
                                    "four", "fixed6")
    assert unconfigured in error_of(engine, "network", "connect", "--ip6", "fd42:198:9::11",
                                    "ula", "fixed6")
    engine.docker("network", "disconnect", "dual", "fixed6")
    assert ("Invalid address fd42:198:8::10: It does not belong to any of this network's "
            "subnets") in error_of(engine, "network", "connect", "--ip6", "fd42:198:8::10",
                                   "dual", "fixed6")
    engine.docker("network", "connect", "--driver-opt", "foo=bar", "four", "fixed6")
    endpoint = json.loads(engine.docker("inspect", "fixed6").stdout)[0]["NetworkSettings"][
        "Networks"]["four"]
    assert endpoint["DriverOpts"] == {"foo": "bar"}


def test_config_only_networks(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "--config-only", "--subnet", "10.198.2.0/24",
                  "--gateway", "10.198.2.254", "--label", "kind=template",
                  "-o", "com.docker.network.bridge.enable_icc=false", "template")
    template = inspect_network(engine, "template")
    assert template["ConfigOnly"] is True and template["Driver"] == "null"
    assert template["Scope"] == "local"
    assert template["IPAM"]["Config"] == [{"Subnet": "10.198.2.0/24",
                                           "Gateway": "10.198.2.254"}]
    assert "cannot create endpoint on configuration-only network" in error_of(
        engine, "run", "--rm", "--network", "template", busybox, "true")

    engine.docker("network", "create", "--config-from", "template", "built")
    built = inspect_network(engine, "built")
    assert built["ConfigFrom"] == {"Network": "template"} and built["ConfigOnly"] is False
    assert built["Driver"] == "bridge"
    assert built["IPAM"]["Config"] == template["IPAM"]["Config"]
    assert built["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    route = run_output(engine, "--network", "built", busybox, "ip", "-4", "route")
    assert "default via 10.198.2.254" in route

    assert "user specified configurations are not supported" in error_of(
        engine, "network", "create", "--config-from", "template", "--subnet", "10.198.9.0/24",
        "mixed")
    assert 'configuration network "nosuch" does not exist' in error_of(
        engine, "network", "create", "--config-from", "nosuch", "orphan")
    assert 'configuration network "template" is in use' in error_of(
        engine, "network", "rm", "template")
    engine.docker("network", "rm", "built", "template")


# -- endpoints: link-local addresses and GwPriority ---------------------------

def test_link_local_ips_and_gateway_priority(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "--subnet", "10.198.4.0/24", "first")
    engine.docker("network", "create", "--subnet", "10.198.5.0/24", "second")
    engine.docker("run", "-d", "--name", "multi", "--network", "first",
                  "--link-local-ip", "169.254.10.10", busybox, "sleep", "120")
    addresses = engine.docker("exec", "multi", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "169.254.10.10/16" in addresses.stdout.decode()
    settings = json.loads(engine.docker("inspect", "multi").stdout)[0]["NetworkSettings"]
    assert settings["Networks"]["first"]["IPAMConfig"]["LinkLocalIPs"] == ["169.254.10.10"]

    def default_route() -> str:
        routes = engine.docker("exec", "multi", "ip", "-4", "route").stdout.decode()
        return next(line for line in routes.splitlines() if line.startswith("default"))

    assert default_route().startswith("default via 10.198.4.1")
    engine.docker("network", "connect", "--gw-priority", "5", "second", "multi")
    assert default_route().startswith("default via 10.198.5.1")
    settings = json.loads(engine.docker("inspect", "multi").stdout)[0]["NetworkSettings"]
    assert settings["Networks"]["second"]["GwPriority"] == 5
    engine.docker("network", "disconnect", "second", "multi")
    assert default_route().startswith("default via 10.198.4.1")

    # At create, the endpoint of highest priority wins whatever the order.
    engine.docker("create", "--name", "picky", "--network", "name=first",
                  "--network", "name=second,gw-priority=3", busybox, "ip", "-4", "route")
    engine.docker("start", "-a", "picky")
    routes = engine.docker("logs", "picky").stdout.decode()
    assert "default via 10.198.5.1" in routes


# -- macvlan and ipvlan -------------------------------------------------------

def test_macvlan_containers_live_on_the_parents_segment(clean: Engine, busybox: str,
                                                        segment: Segment) -> None:
    engine = clean
    engine.docker("network", "create", "-d", "macvlan", "--subnet", "10.198.3.0/24",
                  "--gateway", "10.198.3.1", "-o", f"parent={segment.parent}", "segment")
    info = inspect_network(engine, "segment")
    assert info["Driver"] == "macvlan" and info["Options"]["parent"] == segment.parent
    engine.docker("run", "-d", "--name", "mv1", "--network", "segment", busybox,
                  "sleep", "120")
    networks = json.loads(engine.docker("inspect", "mv1").stdout)[0]["NetworkSettings"][
        "Networks"]
    assert networks["segment"]["IPAddress"] == "10.198.3.2"
    assert networks["segment"]["MacAddress"] == "02:42:0a:c6:03:02"
    route = engine.docker("exec", "mv1", "ip", "-4", "route").stdout.decode()
    assert "default via 10.198.3.1" in route
    # The host end of the segment reaches the container, and the container it.
    assert segment.ping_from_peer("10.198.3.2")
    engine.docker("exec", "mv1", "ping", "-c", "1", "-W", "2", segment.address)
    # Bridge mode: containers on one parent reach each other.
    run_output(engine, "--network", "segment", "--ip", "10.198.3.20", busybox,
               "ping", "-c", "1", "-W", "2", "10.198.3.2")
    engine.docker("network", "disconnect", "segment", "mv1")
    links = engine.docker("exec", "mv1", "ip", "-o", "link").stdout.decode()
    assert "eth0" not in links
    engine.docker("rm", "-f", "mv1")
    engine.docker("network", "rm", "segment")


@pytest.mark.parametrize("mode", ["private", "vepa"])
def test_macvlan_private_and_vepa_modes_isolate_containers(
        clean: Engine, busybox: str, segment: Segment, mode: str) -> None:
    """The test's segment reflects nothing back, so siblings never meet (a VEPA
    switch would hairpin them); the segment reaches each of them."""
    engine = clean
    engine.docker("network", "create", "-d", "macvlan", "--subnet", "10.198.3.0/24",
                  "--gateway", "10.198.3.1", "-o", f"parent={segment.parent}",
                  "-o", f"macvlan_mode={mode}", mode)
    engine.docker("run", "-d", "--name", "alone", "--network", mode, busybox,
                  "sleep", "120")
    assert segment.ping_from_peer("10.198.3.2")
    lonely = engine.docker("run", "--rm", "--network", mode, busybox,
                           "ping", "-c", "1", "-W", "2", "10.198.3.2", check=False)
    assert lonely.returncode != 0


def test_macvlan_passthru_takes_the_parent_for_one_container(
        clean: Engine, busybox: str, segment: Segment) -> None:
    engine = clean
    engine.docker("network", "create", "-d", "macvlan", "--subnet", "10.198.3.0/24",
                  "--gateway", "10.198.3.1", "-o", f"parent={segment.parent}",
                  "-o", "macvlan_mode=passthru", "through")
    engine.docker("run", "-d", "--name", "owner", "--network", "through", busybox,
                  "sleep", "120")
    engine.docker("exec", "owner", "ping", "-c", "1", "-W", "2", segment.address)
    assert "failed to create the macvlan port" in error_of(
        engine, "run", "--rm", "--network", "through", busybox, "true")


def test_macvlan_and_ipvlan_errors(clean: Engine, segment: Segment) -> None:
    engine = clean
    assert ("requested macvlan mode 'wild' is not valid, 'bridge' mode is the macvlan "
            "driver default") in error_of(engine, "network", "create", "-d", "macvlan",
                                          "-o", "macvlan_mode=wild", "bad")
    assert ("requested ipvlan mode 'l9' is not valid, 'l2' mode is the ipvlan driver "
            "default") in error_of(engine, "network", "create", "-d", "ipvlan",
                                   "-o", "ipvlan_mode=l9", "bad")
    assert "invalid subinterface vlan name nfnosuch, example formatting is eth0.10" in \
        error_of(engine, "network", "create", "-d", "macvlan", "-o", "parent=nfnosuch", "bad")
    assert "-o parent interface does was not found on the host: nfnosuch" in error_of(
        engine, "network", "create", "-d", "macvlan", "-o", "parent=nfnosuch.10", "bad")
    assert "loopback interface is not a valid macvlan parent link" in error_of(
        engine, "network", "create", "-d", "macvlan", "-o", "parent=lo", "bad")
    engine.docker("network", "create", "-d", "macvlan", "-o", f"parent={segment.parent}",
                  "taken")
    assert f"is already using parent interface {segment.parent}" in error_of(
        engine, "network", "create", "-d", "macvlan", "-o", f"parent={segment.parent}",
        "bad")
    names = engine.docker("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
    assert "bad" not in names


def _kernel_has(kind: str, parent: str) -> bool:
    probe = "nfprobe" + os.urandom(3).hex()
    made = subprocess.run(["ip", "link", "add", "link", parent, "name", probe, "type", kind],
                          capture_output=True)
    subprocess.run(["ip", "link", "del", probe], capture_output=True)
    return made.returncode == 0


def test_ipvlan_l2_and_l3(clean: Engine, busybox: str, segment: Segment) -> None:
    engine = clean
    engine.docker("network", "create", "-d", "ipvlan", "--subnet", "10.198.3.0/24",
                  "--gateway", "10.198.3.1", "-o", f"parent={segment.parent}", "ipv")
    if not _kernel_has("ipvlan", segment.parent):
        # The network exists; a container cannot get a link the kernel lacks.
        assert "failed to create the ipvlan port" in error_of(
            engine, "run", "--rm", "--network", "ipv", busybox, "true")
        return
    route = run_output(engine, "--network", "ipv", busybox, "sh", "-c",
                       f"ip -4 route; ping -c 1 -W 2 {segment.address}")
    assert "default via 10.198.3.1" in route
    engine.docker("network", "rm", "ipv")
    engine.docker("network", "create", "-d", "ipvlan", "--subnet", "10.198.6.0/24",
                  "-o", f"parent={segment.parent}", "-o", "ipvlan_mode=l3", "ipv3")
    route = run_output(engine, "--network", "ipv3", busybox, "ip", "-4", "route")
    assert "default dev eth0" in route


def test_macvlan_without_parent_gets_a_dummy(clean: Engine) -> None:
    engine = clean
    result = engine.docker("network", "create", "-d", "macvlan", "alone", check=False)
    if result.returncode != 0:
        # Kernels without dummy links (CONFIG_DUMMY) cannot make the parent.
        assert "failed to create the dummy parent interface dm-" in result.stderr.decode()
        assert "alone" not in engine.docker("network", "ls").stdout.decode()
        return
    network_id = inspect_network(engine, "alone")["Id"]
    dummy = f"/sys/class/net/dm-{network_id[:12]}"
    assert os.path.exists(dummy)
    engine.docker("network", "rm", "alone")
    assert not os.path.exists(dummy)


def test_sdk_create_options_and_endpoint_settings(clean: Engine, busybox: str) -> None:
    client = clean.client()
    pool = docker.types.IPAMPool(subnet="10.198.7.0/24", gateway="10.198.7.254",
                                 aux_addresses={"printer": "10.198.7.2"})
    network = client.networks.create(
        "sdknet", driver="bridge", attachable=True, labels={"made": "sdk"},
        ipam=docker.types.IPAMConfig(pool_configs=[pool], options={"o": "v"}),
        options={"com.docker.network.bridge.enable_ip_masquerade": "false"})
    network.reload()
    assert network.attrs["IPAM"]["Options"] == {"o": "v"}
    assert network.attrs["IPAM"]["Config"][0]["AuxiliaryAddresses"] == {"printer": "10.198.7.2"}
    assert network.attrs["Attachable"] is True and network.attrs["Labels"] == {"made": "sdk"}
    endpoint = client.api.create_endpoint_config(link_local_ips=["169.254.7.7"])
    container = client.containers.create(
        busybox, ["sleep", "120"], name="sdkc", network="sdknet",
        networking_config={"sdknet": endpoint})
    container.start()
    container.reload()
    settings = container.attrs["NetworkSettings"]["Networks"]["sdknet"]
    assert settings["IPAddress"] == "10.198.7.1"
    assert settings["IPAMConfig"]["LinkLocalIPs"] == ["169.254.7.7"]
    output = container.exec_run(["ip", "-4", "-o", "addr", "show", "eth0"]).output.decode()
    assert "169.254.7.7/16" in output
