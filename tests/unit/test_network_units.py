"""Pure parts of the network service: IPAM, port requests, nft rendering, files."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from services.common import etc_hosts
from services.common.errors import Conflict, Internal, InvalidArgument, PermissionDenied
from services.network import files, ipam
from services.network.firewall import BridgeRules, PortRule, render
from services.network.ports import parse_host_ports, requests_for, reserve

NET = ipaddress.IPv4Network


def test_pick_subnet_skips_taken_and_overlapping() -> None:
    assert ipam.pick_subnet([]) == NET("172.17.0.0/16")
    taken = [NET("172.17.0.0/16"), NET("172.18.5.0/24")]
    assert ipam.pick_subnet(taken) == NET("172.19.0.0/16")
    every_172 = [NET("172.16.0.0/12")]
    assert ipam.pick_subnet(every_172) == NET("192.168.0.0/20")
    with pytest.raises(PermissionDenied):
        ipam.pick_subnet([NET("172.16.0.0/12"), NET("192.168.0.0/16")])


def test_user_pool_checks() -> None:
    with pytest.raises(PermissionDenied, match="Pool overlaps"):
        ipam.check_user_pool(NET("10.1.0.0/25"), "", "", [NET("10.1.0.0/24")])
    with pytest.raises(InvalidArgument, match="Requested address is out of range"):
        ipam.check_user_pool(NET("10.1.0.0/24"), "10.2.0.1", "", [])
    with pytest.raises(InvalidArgument, match="ip-range"):
        ipam.check_user_pool(NET("10.1.0.0/24"), "", "10.1.1.0/28", [])
    ipam.check_user_pool(NET("10.1.0.0/24"), "10.1.0.254", "10.1.0.128/25", [])


def test_allocation_and_static_addresses() -> None:
    subnet = NET("10.1.0.0/29")
    assert ipam.allocate(subnet, "", {"10.1.0.1"}) == "10.1.0.2"
    assert ipam.allocate(subnet, "10.1.0.4/30", {"10.1.0.1"}) == "10.1.0.4"
    with pytest.raises(Conflict):  # 10.1.0.7 is the subnet's broadcast address
        ipam.allocate(subnet, "10.1.0.4/30", {"10.1.0.4", "10.1.0.5", "10.1.0.6"})
    with pytest.raises(Conflict):
        ipam.allocate(subnet, "", {f"10.1.0.{i}" for i in range(1, 7)})
    assert ipam.claim_static(subnet, "10.1.0.3", set()) == "10.1.0.3"
    with pytest.raises(Conflict, match="Address already in use"):
        ipam.claim_static(subnet, "10.1.0.3", {"10.1.0.3"})
    with pytest.raises(InvalidArgument, match="does not belong"):
        ipam.claim_static(subnet, "10.1.0.9", set())
    assert ipam.free_count(subnet, "", {"10.1.0.1", "10.1.0.2"}) == 4
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"


def test_port_requests() -> None:
    requests = requests_for([("80/tcp", "", "8080"), ("53/udp", "127.0.0.1", "")],
                            True, ["80/tcp", "443/tcp"])
    assert [(r.container_port, r.proto, r.host_ip, r.host_ports) for r in requests] == [
        (80, "tcp", "0.0.0.0", (8080, 8080)), (53, "udp", "127.0.0.1", (0, 0)),
        (443, "tcp", "0.0.0.0", (0, 0))]
    assert parse_host_ports("8000-8010") == (8000, 8010)
    with pytest.raises(InvalidArgument):
        parse_host_ports("9-1")
    with pytest.raises(InvalidArgument):
        requests_for([("80/icmp", "", "")], False, [])


def test_render_rules() -> None:
    script = render("btest", [
        BridgeRules("btest0", "172.17.0.0/16", internal=False, icc=True),
        BridgeRules("btest-a", "172.18.0.0/16", internal=True, icc=False,
                    veths=("btestv1", "btestv2"))],
        [PortRule("tcp", "127.0.0.1", 8080, "172.17.0.2", 80),
         PortRule("udp", "0.0.0.0", 5353, "172.17.0.2", 53)])
    assert script.startswith("table ip btest {}\ndelete table ip btest\n")
    assert "ip daddr 127.0.0.1 tcp dport 8080 dnat to 172.17.0.2:80" in script
    assert "    udp dport 5353 dnat to 172.17.0.2:53" in script
    assert 'ip saddr 172.17.0.0/16 oifname != "btest0" masquerade' in script
    assert 'ip saddr 172.18.0.0/16 oifname != "btest-a"' not in script
    assert 'iifname "btest-a" oifname != "btest-a" drop' in script
    assert 'iifname "btest0" oifname { "btest-a" } drop' in script
    assert 'iifname { "btestv1", "btestv2" } oifname { "btestv1", "btestv2" } drop' in script


def test_container_files(tmp_path, monkeypatch) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a.test b.test\n"
                    "options ndots:2\n")
    monkeypatch.setattr(files, "HOST_RESOLV_CONF", conf)
    host = files.read_host_resolv_conf()
    assert host.nameservers == ["127.0.0.53", "10.0.0.2"]
    assert files.container_nameservers(host) == ["10.0.0.2"]
    assert files.container_nameservers(files.HostResolvConf(["127.0.0.1"])) == \
        files.FALLBACK_NAMESERVERS
    assert files.resolv_conf(["10.0.0.2"], host.search, host.options) == \
        "nameserver 10.0.0.2\nsearch a.test b.test\noptions ndots:2\n"
    hosts = files.hosts_file("web", "example.test", ["172.17.0.2"], [("db", "10.0.0.9")])
    assert hosts.endswith("10.0.0.9\tdb\n172.17.0.2\tweb.example.test web\n")


def test_hosts_records_per_address_added_and_removed() -> None:
    """One line per address of each network (Docker's updateHostsFile), and a
    disconnect removes only the lines of that network's addresses."""
    hosts = files.hosts_file("c1", "", ["10.0.1.2", "10.0.2.2", "fd00::2"], [])
    assert hosts.endswith("10.0.1.2\tc1\n10.0.2.2\tc1\nfd00::2\tc1\n")
    joined = etc_hosts.append_records(hosts, files.host_records("c1", "", ["10.0.3.2"]))
    assert joined.endswith("fd00::2\tc1\n10.0.3.2\tc1\n")
    left = etc_hosts.delete_records(joined + "1.2.3.4 foo\n10.0.2.2\tc1 mine\n",
                                    files.host_records("c1", "", ["10.0.2.2", "fd00::2"]))
    assert left.endswith("ff02::2\tip6-allrouters\n10.0.1.2\tc1\n10.0.3.2\tc1\n"
                         "1.2.3.4 foo\n10.0.2.2\tc1 mine\n")
    assert files.host_records("", "", ["10.0.1.2"]) == []
    assert files.host_records("db.local", "", ["10.0.1.3"]) == ["10.0.1.3\tdb.local db"]


def test_ipv6_pools() -> None:
    ula = ipam.random_ula()
    assert ula.prefixlen == 64 and str(ula).startswith("fd")
    subnet = ipaddress.IPv6Network("fd00:1::/64")
    assert ipam.allocate6(subnet, {"fd00:1::1"}) == "fd00:1::2"
    assert ipam.allocate6(subnet, {"fd00:1::1", "fd00:1::2"}) == "fd00:1::3"
    with pytest.raises(PermissionDenied):
        ipam.check_user_pool6(ipaddress.IPv6Network("fd00:1::/80"), "", [subnet])
    with pytest.raises(InvalidArgument):
        ipam.check_user_pool6(subnet, "fd00:2::1", [])
    script = render("btest", [BridgeRules("btest-6", "172.18.0.0/16", internal=False,
                                          icc=True, subnet6="fd00:1::/64")], [])
    assert 'table ip6 btest {' in script
    assert 'ip6 saddr fd00:1::/64 oifname != "btest-6" masquerade' in script


def _time_wait_port() -> int:
    """A loopback port whose only trace is a connection in TIME-WAIT: its
    listener (with SO_REUSEADDR, as Go's, nginx's, docker-proxy's) accepted,
    closed first, and is gone."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
        client.recv(1)
        client.close()
    return port


def test_a_port_left_in_time_wait_can_be_published_but_not_twice() -> None:
    """As with docker-proxy's listener (kernel rule: both sockets must have
    SO_REUSEADDR); a second reservation still fails."""
    port = _time_wait_port()
    request = requests_for([("80/tcp", "127.0.0.1", str(port))], False, [])[0]
    published, sock = reserve(request, "172.17.0.2:80")
    try:
        assert published.host_port == port
        with pytest.raises(Internal, match="address already in use"):
            reserve(request, "172.17.0.3:80")
    finally:
        sock.close()
