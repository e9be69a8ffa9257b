"""Network create as a dockerd outside a swarm answers it: refusals, config-only
networks and ConfigFrom, auxiliary addresses, and the macvlan/ipvlan options
(services/network/networks.py, wiring_macvlan.py), on a temp SQLite store and
fake kernel wiring: no root, no links."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from services.common.errors import BerthError, InvalidArgument, NotFound, PermissionDenied
from services.common.events import EventBus
from services.network import wiring_macvlan
from services.network.endpoints import check_connectable
from services.network.networks import Networks
from services.network.specs import NetworkSpec
from services.network.store import NetworkRecord, NetworkStore
from tests.support.fakes import FakeWiring


def run(root: Path, scenario: Callable[[Networks], Awaitable[None]]) -> None:
    async def main() -> None:
        store = NetworkStore(root / "state.db")
        networks = Networks("bt", store, EventBus("network"), FakeWiring(store))
        await networks.bring_up()
        try:
            await scenario(networks)
        finally:
            store.close()
    asyncio.run(main())


@pytest.mark.parametrize(("spec", "error", "message"), [
    (NetworkSpec(name="oo", driver="overlay"), PermissionDenied,
     'This node is not a swarm manager. Use "docker swarm init"'),
    (NetworkSpec(name="ii", ingress=True), PermissionDenied,
     "Ingress network can only be global scope network"),
    (NetworkSpec(name="ss", scope="swarm"), PermissionDenied,
     "cannot create a swarm scoped network when swarm is not active"),
    (NetworkSpec(name="nn", enable_ipv4=False), InvalidArgument,
     "IPv4 or IPv6 must be enabled"),
    (NetworkSpec(name="pp", driver="weave"), NotFound, 'plugin "weave" not found'),
    (NetworkSpec(name="mm", driver="macvlan", options={"macvlan_mode": "x"}), InvalidArgument,
     "requested macvlan mode 'x' is not valid"),
    (NetworkSpec(name="vv", driver="ipvlan", options={"ipvlan_flag": "x"}), InvalidArgument,
     "requested ipvlan flag 'x' is not valid"),
    (NetworkSpec(name="ll", driver="ipvlan", options={"parent": "lo"}), InvalidArgument,
     "loopback interface is not a valid ipvlan parent link"),
])
def test_refusals(spec: NetworkSpec, error: type[BerthError], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Networks.check_driver(spec)


def test_config_only_and_config_from(tmp_path: Path) -> None:
    async def scenario(networks: Networks) -> None:
        template = await networks.create(NetworkSpec(
            name="template", config_only=True, subnet="10.9.0.0/24",
            aux_addresses={"router": "10.9.0.9"}, options={"x": "y"}))
        assert (template.driver, template.config_only, template.bridge) == ("null", True, "")
        with pytest.raises(PermissionDenied, match="configuration-only network"):
            check_connectable(template, None)
        built = await networks.create(NetworkSpec(name="built", config_from="template"))
        assert (built.subnet, built.aux_addresses, built.options) == (
            "10.9.0.0/24", {"router": "10.9.0.9"}, {"x": "y"})
        assert built.config_from == template.id
        with pytest.raises(PermissionDenied, match="not supported if the network depends"):
            await networks.create(NetworkSpec(name="mixed", config_from="template",
                                              options={"a": "b"}))
        with pytest.raises(NotFound, match='configuration network "built" does not exist'):
            await networks.create(NetworkSpec(name="chained", config_from="built"))
        with pytest.raises(PermissionDenied, match='configuration network "template" is in '
                                                   'use'):
            await networks.remove("template")
        await networks.remove("built")
        await networks.remove("template")
    run(tmp_path, scenario)


def test_auxiliary_addresses_lie_in_the_subnet(tmp_path: Path) -> None:
    async def scenario(networks: Networks) -> None:
        with pytest.raises(InvalidArgument, match="invalid auxiliary address gw"):
            await networks.create(NetworkSpec(name="aux", subnet="10.9.1.0/24",
                                              aux_addresses={"gw": "10.9.2.1"}))
    run(tmp_path, scenario)


def test_sublink_of_a_network() -> None:
    def record(driver: str, **options: str) -> NetworkRecord:
        return NetworkRecord(id="ab" * 32, name="n", driver=driver, created="",
                             options=options)
    assert wiring_macvlan.sublink_of(record("macvlan")) == wiring_macvlan.SubLink(
        "macvlan", "dm-abababababab", "bridge")
    l3 = wiring_macvlan.sublink_of(record("ipvlan", parent="eth0", ipvlan_mode="l3"))
    assert (l3.parent, l3.mode, l3.flag, l3.routes_by_device) == ("eth0", "l3", "bridge", True)
    assert not wiring_macvlan.sublink_of(record("ipvlan")).routes_by_device
    same = record("macvlan", parent="eth0")
    with pytest.raises(InvalidArgument, match="already using parent interface eth0"):
        wiring_macvlan.check_parent_free(same, [record("macvlan", parent="eth0")])
    wiring_macvlan.check_parent_free(same, [record("ipvlan", parent="eth0")])
