"""Networks through the real docker CLI and SDK: create/ls/inspect/rm,
published ports, DNS by name, connect/disconnect, isolation, Docker's errors."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request

import docker
import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from berth.network.v1 import network_pb2
from services.common import netns
from tests.support.engine import Engine


def fetch(url: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        return probe.getsockname()[0]


def error_of(engine: Engine, *args: str) -> str:
    result = engine.docker(*args, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr.decode()


@pytest.fixture
def clean(engine: Engine):
    yield engine
    engine.clean()


def test_network_lifecycle_and_errors(clean: Engine) -> None:
    engine = clean
    listed = engine.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.decode()
    assert {"bridge bridge", "host host", "none null"} <= set(listed.split("\n"))
    net_id = engine.docker("network", "create", "--subnet", "10.197.3.0/24", "--gateway",
                           "10.197.3.254", "--label", "team=net", "--internal",
                           "lifecycle").stdout.decode().strip()
    info = json.loads(engine.docker("network", "inspect", "lifecycle").stdout)[0]
    assert info["Id"] == net_id and info["Internal"] is True
    assert info["IPAM"]["Config"] == [{"Subnet": "10.197.3.0/24", "Gateway": "10.197.3.254"}]
    assert info["Labels"] == {"team": "net"}
    custom = engine.docker("network", "ls", "-q", "--no-trunc", "-f", "type=custom",
                           "-f", "label=team=net").stdout.decode().split()
    assert custom == [net_id]
    exact = engine.docker("network", "ls", "-q", "--no-trunc", "-f", "name=^lifecycle$")
    assert exact.stdout.decode().split() == [net_id]

    assert "network with name lifecycle already exists" in error_of(
        engine, "network", "create", "lifecycle")
    assert "Pool overlaps with other one on this address space" in error_of(
        engine, "network", "create", "--subnet", "10.197.3.0/25", "other")
    assert "bridge is a pre-defined network and cannot be removed" in error_of(
        engine, "network", "rm", "bridge")
    assert "network nosuchnet not found" in error_of(engine, "network", "inspect", "nosuchnet")

    engine.docker("network", "rm", "lifecycle")
    assert "lifecycle" not in engine.docker("network", "ls").stdout.decode()
    engine.docker("network", "create", "--label", "gone=yes", "pruned")
    pruned = engine.docker("network", "prune", "-f", "--filter", "label=gone").stdout.decode()
    assert "pruned" in pruned


def test_check_duplicate_is_accepted_and_a_duplicate_always_refused(clean: Engine) -> None:
    """CheckDuplicate is deprecated in Docker, which refuses a duplicate name
    whatever it says; not a field of berth's CreateNetworkRequest at all."""
    assert "check_duplicate" not in network_pb2.CreateNetworkRequest.DESCRIPTOR.fields_by_name
    api = clean.client().api
    api.create_network("dup", check_duplicate=False)
    for check in (False, True):
        with pytest.raises(docker.errors.APIError,
                           match="network with name dup already exists") as refused:
            api.create_network("dup", check_duplicate=check)
        assert refused.value.status_code == 409
    assert [n["Name"] for n in api.networks(names=["dup"])] == ["dup"]


def test_published_ports(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("run", "-d", "--name", "web1", "-p", "127.0.0.1::80", "-p", "0:80",
                  busybox, "httpd", "-f", "-p", "80", "-h", "/etc")
    ports = engine.docker("port", "web1").stdout.decode().split("\n")
    bound = {line.split(" -> ")[1] for line in ports if line}
    local = next(p for p in bound if p.startswith("127.0.0.1:"))
    anywhere = next(p for p in bound if p.startswith("0.0.0.0:"))
    hostname = engine.docker("inspect", "-f", "{{.Config.Hostname}}", "web1").stdout.decode()
    assert fetch(f"http://{local}/hostname").strip() == hostname.strip()
    any_port = anywhere.split(":")[1]
    assert fetch(f"http://127.0.0.1:{any_port}/hostname").strip() == hostname.strip()
    assert fetch(f"http://{host_address()}:{any_port}/hostname").strip() == hostname.strip()

    # Hairpin: containers reach the published port through the host's address.
    engine.docker("network", "create", "hairpin")
    request = (f'(printf "GET /hostname HTTP/1.0\\r\\n\\r\\n"; sleep 3) '
               f'| nc {host_address()} {any_port}')
    for network in ("bridge", "hairpin"):
        reply = engine.docker("run", "--rm", "--network", network, busybox, "sh", "-c", request)
        assert hostname.strip() in reply.stdout.decode(), (network, reply)

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        message = error_of(engine, "run", "-d", "--name", "clash", "-p", f"{port}:80",
                           busybox, "sleep", "60")
        assert "address already in use" in message
    state = engine.docker("inspect", "-f", "{{.State.Running}}", "clash", check=False)
    assert state.stdout.decode().strip() != "true"


def test_dns_isolation_connect_disconnect(clean: Engine, busybox: str) -> None:
    engine = clean
    since = str(time.time())
    engine.docker("network", "create", "front")
    engine.docker("network", "create", "back")
    engine.docker("run", "-d", "--name", "server", "--network", "front",
                  "--network-alias", "api", busybox, "sleep", "300")
    for name in ("server", "api"):
        ping = engine.docker("run", "--rm", "--network", "front", busybox,
                             "ping", "-c1", "-W2", name, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr

    # The default bridge resolves no names; another network cannot reach it.
    lookup = engine.docker("run", "--rm", busybox, "ping", "-c1", "-W1", "server", check=False)
    assert lookup.returncode != 0
    address = engine.docker("inspect", "-f", "{{.NetworkSettings.Networks.front.IPAddress}}",
                            "server").stdout.decode().strip()
    cross = engine.docker("run", "--rm", "--network", "back", busybox,
                          "ping", "-c1", "-W1", address, check=False)
    assert cross.returncode != 0

    engine.docker("network", "connect", "back", "server")
    assert "already exists in network back" in error_of(
        engine, "network", "connect", "back", "server")
    ping = engine.docker("run", "--rm", "--network", "back", busybox,
                         "ping", "-c1", "-W2", "server", check=False)
    assert ping.returncode == 0
    info = json.loads(engine.docker("network", "inspect", "back").stdout)[0]
    assert [c["Name"] for c in info["Containers"].values()] == ["server"]
    assert "has active endpoints" in error_of(engine, "network", "rm", "back")

    engine.docker("run", "-d", "--name", "client", "--network", "front", busybox, "sleep", "300")
    assert engine.docker("exec", "client", "ping", "-c1", "-W2", address,
                         check=False).returncode == 0
    engine.docker("network", "disconnect", "front", "server")
    for target in (address, "server"):
        gone = engine.docker("exec", "client", "ping", "-c1", "-W1", target, check=False)
        assert gone.returncode != 0

    events = engine.docker("events", "--since", since, "--until", str(time.time()),
                           "--filter", "type=network", "--format", "{{json .}}").stdout
    seen = [json.loads(line) for line in events.decode().splitlines()]
    actions = {(e["Action"], e["Actor"]["Attributes"].get("name")) for e in seen}
    assert {("create", "front"), ("connect", "back"), ("disconnect", "front")} <= actions


def test_sdk_static_address(clean: Engine, busybox: str) -> None:
    client = clean.client()
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.197.9.0/24")])
    network = client.networks.create("fixed", driver="bridge", ipam=ipam)
    container = client.containers.run(busybox, ["sleep", "300"], detach=True, name="pinned")
    network.connect(container, ipv4_address="10.197.9.77", aliases=["pin"])
    network.reload()
    assert network.containers[0].id == container.id
    container.reload()
    settings = container.attrs["NetworkSettings"]["Networks"]["fixed"]
    assert settings["IPAddress"] == "10.197.9.77"
    with pytest.raises(docker.errors.APIError) as outside:
        network.disconnect(container)
        network.connect(container, ipv4_address="10.1.1.1")
    assert "does not belong to any of this network's subnets" in str(outside.value)


def test_addresses_come_back_after_containers_go(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "--subnet", "10.197.12.0/24", "recycle")
    for _ in range(4):
        engine.docker("run", "--rm", "--network", "recycle", busybox, "true")
    engine.docker("run", "-d", "--name", "stays", "--network", "recycle", busybox, "sleep", "60")
    address = engine.docker("inspect", "-f", "{{.NetworkSettings.Networks.recycle.IPAddress}}",
                            "stays").stdout.decode().strip()
    assert address == "10.197.12.2"
    engine.docker("rm", "-f", "stays")
    info = json.loads(engine.docker("network", "inspect", "recycle").stdout)[0]
    assert info["Containers"] == {}
    engine.docker("network", "rm", "recycle")


def test_dns_follows_a_rename(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "renames")
    engine.docker("run", "-d", "--name", "before", "--network", "renames", busybox,
                  "sleep", "300")
    engine.docker("rename", "before", "after")
    found = engine.docker("run", "--rm", "--network", "renames", busybox,
                          "ping", "-c1", "-W2", "after", check=False)
    assert found.returncode == 0, found.stdout + found.stderr
    gone = engine.docker("run", "--rm", "--network", "renames", busybox,
                         "ping", "-c1", "-W1", "before", check=False)
    assert gone.returncode != 0


def test_legacy_links_on_the_default_bridge(clean: Engine, busybox: str) -> None:
    engine = clean
    linked = engine.docker("run", "-d", "--name", "db-1", "--expose", "5432", "--expose",
                           "53/udp", "-e", "SECRET=s3", busybox, "sleep", "300")
    linked_id = linked.stdout.decode().strip()
    address = engine.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}",
                            "db-1").stdout.decode().strip()
    seen = engine.docker("run", "--rm", "--name", "web", "--link", "db-1:db", busybox, "sh",
                         "-c", "env; cat /etc/hosts; ping -c1 -W2 db").stdout.decode()
    variables = dict(line.split("=", 1) for line in seen.splitlines() if line.startswith("DB_"))
    assert variables == {
        "DB_NAME": "/web/db", "DB_ENV_SECRET": "s3",
        "DB_PORT": f"udp://{address}:53", "DB_PORT_5432_TCP": f"tcp://{address}:5432",
        "DB_PORT_5432_TCP_ADDR": address, "DB_PORT_5432_TCP_PORT": "5432",
        "DB_PORT_5432_TCP_PROTO": "tcp", "DB_PORT_53_UDP": f"udp://{address}:53",
        "DB_PORT_53_UDP_ADDR": address, "DB_PORT_53_UDP_PORT": "53",
        "DB_PORT_53_UDP_PROTO": "udp"}
    assert f"{address}\tdb {linked_id[:12]} db-1\n" in seen
    assert "1 packets received" in seen

    engine.docker("create", "--name", "later", "--link", "db-1", busybox, "true")
    links = engine.docker("inspect", "-f", "{{json .HostConfig.Links}}", "later").stdout
    assert json.loads(links) == ["/db-1:/later/db-1"]
    engine.docker("stop", "-t", "0", "db-1")
    assert ("Cannot link to a non running container: /db-1 AS /later/db-1"
            in error_of(engine, "start", "later"))
    assert ("could not get container for nosuch: No such container: nosuch"
            in error_of(engine, "run", "--rm", "--link", "nosuch:x", busybox, "true"))


def networks_of(engine: Engine, container: str) -> dict[str, dict]:
    out = engine.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container).stdout
    return json.loads(out)


def on_network(engine: Engine, network: str) -> list[str]:
    return engine.docker("ps", "-a", "--filter", f"network={network}",
                         "--format", "{{.Names}}").stdout.decode().split()


def test_networks_of_created_and_stopped_containers(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "plan-a")
    engine.docker("network", "create", "plan-b")
    engine.docker("create", "--name", "planned", "--network", "plan-a", busybox, "sleep", "300")
    engine.docker("network", "connect", "--alias", "extra", "plan-b", "planned")
    networks = networks_of(engine, "planned")
    assert sorted(networks) == ["plan-a", "plan-b"]
    assert networks["plan-b"]["Aliases"] == ["extra"]
    assert networks["plan-b"]["IPAddress"] == ""
    assert on_network(engine, "plan-b") == ["planned"]
    engine.docker("network", "disconnect", "plan-a", "planned")
    assert sorted(networks_of(engine, "planned")) == ["plan-b"]
    assert on_network(engine, "plan-a") == []

    engine.docker("start", "planned")
    assert sorted(networks_of(engine, "planned")) == ["plan-b"]
    engine.docker("network", "connect", "plan-a", "planned")
    engine.docker("stop", "-t", "0", "planned")
    stopped = networks_of(engine, "planned")
    assert sorted(stopped) == ["plan-a", "plan-b"]
    assert stopped["plan-a"]["IPAddress"] == "" and stopped["plan-a"]["NetworkID"]
    # As Docker, connecting a stopped container again changes nothing.
    engine.docker("network", "connect", "plan-a", "planned")
    engine.docker("network", "disconnect", "plan-b", "planned")
    assert on_network(engine, "plan-b") == []
    engine.docker("start", "planned")
    running = networks_of(engine, "planned")
    assert sorted(running) == ["plan-a"] and running["plan-a"]["IPAddress"]


def test_embedded_resolver_as_docker(clean: Engine, busybox: str) -> None:
    engine = clean
    engine.docker("network", "create", "resolved")
    engine.docker("run", "-d", "--name", "web", "--network", "resolved", busybox,
                  "sleep", "300")
    conf = engine.docker("run", "--rm", "--network", "resolved", busybox,
                         "cat", "/etc/resolv.conf").stdout.decode().splitlines()
    assert conf[0] == "nameserver 127.0.0.11" and conf[-1].endswith("ndots:0")
    engine.docker("run", "-d", "--name", "late", busybox, "sleep", "300")
    before = engine.docker("exec", "late", "cat", "/etc/resolv.conf").stdout.decode()
    assert "127.0.0.11" not in before
    engine.docker("network", "connect", "resolved", "late")
    lookup = engine.docker("exec", "late", "nslookup", "web", check=False)
    address = engine.docker("inspect", "-f", "{{.NetworkSettings.Networks.resolved.IPAddress}}",
                            "web").stdout.decode().strip()
    assert address in lookup.stdout.decode(), lookup.stdout + lookup.stderr
    assert engine.docker("exec", "late", "ping", "-c1", "-W2", "web").returncode == 0


def test_connect_and_disconnect_keep_what_the_user_wrote_in_etc_files(
        clean: Engine, busybox: str) -> None:
    """As moby's etchosts.Add/Delete: a live connect appends the container's
    lines to /etc/hosts and a disconnect drops just them, so lines added
    inside the container stay; resolv.conf is rewritten only by the first
    user network (the switch to the embedded resolver), not by later ones."""
    engine = clean
    engine.docker("network", "create", "--subnet", "10.197.5.0/24", "keep-a")
    engine.docker("network", "create", "--subnet", "10.197.6.0/24", "keep-b")
    engine.docker("run", "-d", "--name", "keeper", "--hostname", "keeper", busybox,
                  "sleep", "300")

    def shell(script: str) -> str:
        return engine.docker("exec", "keeper", "sh", "-c", script).stdout.decode()

    shell("echo '1.2.3.4 foo' >> /etc/hosts")
    engine.docker("network", "connect", "keep-a", "keeper")
    hosts = shell("cat /etc/hosts").splitlines()
    assert "1.2.3.4 foo" in hosts and hosts[-1] == "10.197.5.2\tkeeper", hosts
    assert shell("cat /etc/resolv.conf").startswith("nameserver 127.0.0.11")
    shell("echo '# mine' >> /etc/resolv.conf")
    engine.docker("network", "connect", "keep-b", "keeper")
    engine.docker("network", "disconnect", "keep-a", "keeper")
    hosts = shell("cat /etc/hosts").splitlines()
    assert "1.2.3.4 foo" in hosts and hosts[-1] == "10.197.6.2\tkeeper", hosts
    assert "10.197.5.2\tkeeper" not in hosts
    assert shell("cat /etc/resolv.conf").endswith("# mine\n")


def test_first_user_network_leaves_an_edited_resolv_conf(clean: Engine,
                                                        busybox: str) -> None:
    """As moby's rebuildDNS (it checks the file against its hash): a
    resolv.conf the user edited inside the container is not switched to the
    embedded resolver, which still answers at 127.0.0.11."""
    engine = clean
    engine.docker("network", "create", "edited")
    engine.docker("run", "-d", "--name", "peer", "--network", "edited", busybox, "sleep", "300")
    engine.docker("run", "-d", "--name", "editor", busybox, "sleep", "300")
    engine.docker("exec", "editor", "sh", "-c", "echo '# mine' >> /etc/resolv.conf")
    before = engine.docker("exec", "editor", "cat", "/etc/resolv.conf").stdout.decode()
    engine.docker("network", "connect", "edited", "editor")
    assert engine.docker("exec", "editor", "cat", "/etc/resolv.conf").stdout.decode() == before
    address = engine.docker("inspect", "-f", "{{.NetworkSettings.Networks.edited.IPAddress}}",
                            "peer").stdout.decode().strip()
    lookup = engine.docker("exec", "editor", "nslookup", "peer", "127.0.0.11").stdout.decode()
    assert address in lookup.split("Name:", 1)[-1], lookup


def test_two_networks_hosts_lines_dns_answer_and_gateway_as_docker(clean: Engine,
                                                                    busybox: str) -> None:
    """As dockerd: /etc/hosts names the container at its address on each
    network; a name shared on two networks resolves on the first by name,
    whose gateway is the default route, whatever the order of connects
    (checked against dockerd 20.10). A disconnect drops that network's line,
    as moby's etchosts.Delete does since it matches address and names (20.10
    matched names only and kept or dropped every line)."""
    engine = clean
    engine.docker("network", "create", "--subnet", "10.197.1.0/24", "zz")
    engine.docker("network", "create", "--subnet", "10.197.2.0/24", "aa")
    for name in ("one", "two"):
        engine.docker("run", "-d", "--name", name, "--hostname", name, "--network", "zz",
                      busybox, "sleep", "300")
        engine.docker("network", "connect", "aa", name)

    def hosts_lines() -> list[str]:
        hosts = engine.docker("exec", "one", "cat", "/etc/hosts").stdout.decode()
        return [line for line in hosts.splitlines() if line.endswith("\tone")]

    def default_route() -> str:
        routes = engine.docker("exec", "one", "ip", "-4", "route").stdout.decode()
        return next(line for line in routes.splitlines() if line.startswith("default"))

    assert hosts_lines() == ["10.197.1.2\tone", "10.197.2.2\tone"]
    assert default_route().startswith("default via 10.197.2.1")
    lookup = engine.docker("exec", "two", "nslookup", "one", "127.0.0.11").stdout.decode()
    answers = lookup.split("Name:", 1)[1]
    assert "10.197.2.2" in answers and "10.197.1.2" not in answers, lookup
    # `name.network` asks that network, as Docker's FQDN form.
    lookup = engine.docker("exec", "two", "nslookup", "one.zz", "127.0.0.11").stdout.decode()
    assert "10.197.1.2" in lookup.split("Name:", 1)[1], lookup

    engine.docker("network", "disconnect", "aa", "one")
    assert hosts_lines() == ["10.197.1.2\tone"]
    assert default_route().startswith("default via 10.197.1.1")
    lookup = engine.docker("exec", "two", "nslookup", "one", "127.0.0.11").stdout.decode()
    assert "10.197.1.2" in lookup.split("Name:", 1)[1], lookup


def serve_whoami_dns(sock: socket.socket, stop: threading.Event) -> None:
    """A DNS server answering every A query with the address that asked."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, (source, port) = sock.recvfrom(4096)
        except TimeoutError:
            continue
        query = DNSRecord.parse(data)
        reply = query.reply()
        if query.q.qtype == QTYPE.A:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(source), ttl=0))
        sock.sendto(reply.pack(), (source, port))


def test_forwarded_queries_leave_from_the_container(clean: Engine, busybox: str) -> None:
    """As Docker's resolver, names it does not know go to the container's
    `--dns` servers from inside the container's netns: a DNS server in
    another container on the network sees the asker's address, not the
    host's (the bridge's gateway)."""
    engine = clean
    engine.docker("network", "create", "--subnet", "10.197.4.0/24", "forwarded")
    engine.docker("run", "-d", "--name", "dns-server", "--network", "forwarded", busybox,
                  "sleep", "300")
    pid = engine.docker("inspect", "-f", "{{.State.Pid}}", "dns-server").stdout.decode().strip()
    server_ip = engine.docker("inspect", "-f",
                              "{{.NetworkSettings.Networks.forwarded.IPAddress}}",
                              "dns-server").stdout.decode().strip()
    server = netns.socket_in(f"/proc/{pid}/ns/net", socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 53))
    stop = threading.Event()
    serving = threading.Thread(target=serve_whoami_dns, args=(server, stop))
    serving.start()
    try:
        engine.docker("run", "-d", "--name", "asker", "--network", "forwarded",
                      "--dns", server_ip, busybox, "sleep", "300")
        asker_ip = engine.docker("inspect", "-f",
                                 "{{.NetworkSettings.Networks.forwarded.IPAddress}}",
                                 "asker").stdout.decode().strip()
        lookup = engine.docker("exec", "asker", "nslookup", "-type=a", "whoami.example.com",
                               "127.0.0.11", check=False)
        output = lookup.stdout.decode()
        assert "Name:" in output, output + lookup.stderr.decode()
        assert asker_ip in output.split("Name:", 1)[1], output
    finally:
        stop.set()
        serving.join()
        server.close()
