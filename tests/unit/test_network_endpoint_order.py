"""Docker's order of a container's endpoints, read by the embedded DNS (which
network answers a name, `name.network` forms) and by the default route
(which gateway)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.events import EventBus
from services.network.dns_lookup import DnsLookup
from services.network.specs import EndpointView
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore
from services.network.wiring import KernelWiring


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NetworkStore]:
    store = NetworkStore(tmp_path / "network.db")
    yield store
    store.close()


def _network(store: NetworkStore, name: str, subnet: int, internal: bool = False) -> None:
    store.save_network(NetworkRecord(id=f"id-{name}", name=name, driver="bridge",
                                     created=f"2026-01-0{subnet}", internal=internal,
                                     subnet=f"10.9.{subnet}.0/24"))


def _endpoint(store: NetworkStore, network: str, container: str, host: int,
              aliases: tuple[str, ...] = (), gw_priority: int = 0) -> None:
    """`container` wired on `network` at host number `host` of its subnet."""
    subnet = next(n.subnet for n in store.networks() if n.name == network)
    store.save_endpoint(EndpointRecord(
        network_id=f"id-{network}", container_id=container * 64, endpoint_id=container,
        container_name=container, ip=subnet.replace(".0/24", f".{host}"),
        aliases=list(aliases), ifname=f"eth-{network}", gw_priority=gw_priority))


def _lookup(store: NetworkStore) -> DnsLookup:
    return DnsLookup(store, KernelWiring("t", store, EventBus("network")))


def test_a_name_on_two_shared_networks_answers_from_the_first_by_name(
        store: NetworkStore) -> None:
    """Connected to zz first, then aa: Docker answers with the address on aa."""
    _network(store, "zz", 1)
    _network(store, "aa", 2)
    for network in ("zz", "aa"):
        _endpoint(store, network, "a", 2, aliases=("web",))
        _endpoint(store, network, "b", 3)
    lookup = _lookup(store)
    assert lookup.lookup("b" * 64, "a") == [("10.9.2.2", "")]
    assert lookup.lookup("b" * 64, "web") == [("10.9.2.2", "")]
    assert lookup.reverse("b" * 64, "10.9.1.2") == "a.zz"
    assert lookup.lookup("b" * 64, "nobody") is None


def test_a_name_only_on_a_later_network_still_resolves(store: NetworkStore) -> None:
    _network(store, "aa", 1)
    _network(store, "bb", 2)
    _endpoint(store, "aa", "asker", 2)
    _endpoint(store, "bb", "asker", 2)
    _endpoint(store, "bb", "db", 3, aliases=("store",))
    _endpoint(store, "aa", "cache", 3, aliases=("store",))
    assert _lookup(store).lookup("asker" * 64, "db") == [("10.9.2.3", "")]
    assert _lookup(store).lookup("asker" * 64, "store") == [("10.9.1.3", "")]


def test_gw_priority_then_internal_then_name_rank_endpoints(store: NetworkStore) -> None:
    _network(store, "aa", 1, internal=True)
    _network(store, "bb", 2)
    _network(store, "cc", 3)
    for network in ("aa", "bb", "cc"):
        _endpoint(store, network, "c", 2, gw_priority=5 if network == "cc" else 0)
    wiring = KernelWiring("t", store, EventBus("network"))
    ranked = sorted(wiring.views("c" * 64), key=lambda view: view.docker_rank)
    assert [view.network.name for view in ranked] == ["cc", "bb", "aa"]
    assert _lookup(store).lookup("c" * 64, "c") == [("10.9.3.2", "")]


def test_among_equals_dual_stack_then_ipv6_then_ipv4_gateways_come_first() -> None:
    def view(name: str, ip: str, ip6: str) -> EndpointView:
        network = NetworkRecord(id=name, name=name, driver="bridge", created="",
                                gateway="10.9.0.1", gateway6="fd00::1")
        return EndpointView(network, EndpointRecord(network_id=name, container_id="c",
                                                    endpoint_id=name, ip=ip, ip6=ip6))
    views = [view("a4", "10.9.0.2", ""), view("b6", "", "fd00::2"),
             view("c46", "10.9.0.3", "fd00::3"), view("d4", "10.9.0.4", "")]
    ranked = sorted(views, key=lambda v: v.docker_rank)
    assert [v.network.name for v in ranked] == ["c46", "b6", "a4", "d4"]


def test_name_dot_network_asks_that_network(store: NetworkStore) -> None:
    """Docker's FQDN form: `name.network`, also for dotted aliases."""
    _network(store, "aa", 1)
    _network(store, "my.net", 2)
    for network in ("aa", "my.net"):
        _endpoint(store, network, "web", 2, aliases=("api.svc",))
        _endpoint(store, network, "asker", 3)
    lookup = _lookup(store)
    assert lookup.lookup("asker" * 64, "web.my.net") == [("10.9.2.2", "")]
    assert lookup.lookup("asker" * 64, "api.svc.aa") == [("10.9.1.2", "")]
    assert lookup.lookup("asker" * 64, "api.svc") == [("10.9.1.2", "")]
    assert lookup.lookup("asker" * 64, "web.other") is None


def test_dns_names_are_listed_once() -> None:
    network = NetworkRecord(id="n", name="n", driver="bridge", created="")
    short = "a" * 12
    record = EndpointRecord(network_id="n", container_id="a" * 64, endpoint_id="e",
                            container_name="app_1", aliases=[short, "app"])
    assert EndpointView(network, record).dns_names == ["app_1", short, "app"]
