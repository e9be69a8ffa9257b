"""Connecting and disconnecting containers (services/network/endpoints.py)
with Docker's checks, on a temp SQLite store and fake kernel wiring: no
root, no bridges."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.errors import BerthError, Internal, InvalidArgument, PermissionDenied
from services.common.events import EventBus
from services.network.endpoints import Endpoints
from services.network.networks import Networks
from services.network.specs import EndpointSpec, NetworkSpec
from services.network.store import NetworkStore, SandboxRecord
from tests.support.fakes import FakeWiring


@dataclass
class Domain:
    store: NetworkStore
    wiring: FakeWiring
    networks: Networks
    endpoints: Endpoints

    def give_sandbox(self, container_id: str, mode: str = "bridge") -> None:
        self.store.save_sandbox(SandboxRecord(container_id=container_id, mode=mode,
                                              netns_path=f"/fake/{container_id}"))


def run(root: Path, scenario: Callable[[Domain], Awaitable[None]]) -> None:
    async def main() -> None:
        store = NetworkStore(root / "state.db")
        wiring = FakeWiring(store)
        networks = Networks("bt", store, EventBus("network"), wiring)
        await networks.bring_up()
        await networks.create(NetworkSpec(name="front"))
        await networks.create(NetworkSpec(name="pinned", subnet="10.9.0.0/24"))
        try:
            await scenario(Domain(store, wiring, networks, Endpoints(store, networks, wiring)))
        finally:
            store.close()
    asyncio.run(main())


@pytest.mark.parametrize(("network", "mode", "message"), [
    ("host", "", "cannot be disconnected from host network or connected to host network"),
    ("front", "host", "cannot be disconnected from host network or connected to host"),
    ("none", "", "one of the networks in private (none) mode"),
    ("front", "none", "one of the networks in private (none) mode"),
    ("front", "container:other", "sharing network namespace with another container"),
    ("front", "cni", "a pod sandbox is connected by its CNI network only"),
])
def test_connect_refuses_host_none_and_shared_namespaces(tmp_path: Path, network: str,
                                                          mode: str, message: str) -> None:
    async def scenario(domain: Domain) -> None:
        if mode:
            domain.give_sandbox("c1", mode)
        with pytest.raises(InvalidArgument, match=re.escape(message)):
            await domain.endpoints.connect("c1", "web", EndpointSpec(network=network))
        assert domain.store.endpoints(container_id="c1") == []
    run(tmp_path, scenario)


@pytest.mark.parametrize(("spec", "message"), [
    (EndpointSpec(network="bridge", aliases=["db"]),
     "network-scoped alias is supported only for containers in user defined networks"),
    (EndpointSpec(network="front", mac_address="zz:00:00:00:00:01"),
     "invalid MAC address: zz:00:00:00:00:01"),
    (EndpointSpec(network="bridge", ipv4_address="172.17.0.9"),
     "user specified IP address is supported on user defined networks only"),
    (EndpointSpec(network="front", ipv4_address="172.20.0.9"),
     "user specified IP address is supported only when connecting to networks with user "
     "configured subnets"),
    (EndpointSpec(network="pinned", ipv4_address="10.10.0.9"), "10.10.0.9"),
])
def test_connect_checks_the_endpoint_request(tmp_path: Path, spec: EndpointSpec,
                                             message: str) -> None:
    async def scenario(domain: Domain) -> None:
        with pytest.raises(BerthError, match=message):
            await domain.endpoints.connect("c1", "web", spec)
        assert domain.store.endpoints(container_id="c1") == []
    run(tmp_path, scenario)


def test_a_second_endpoint_of_a_container_on_a_network_is_refused(tmp_path: Path) -> None:
    async def scenario(domain: Domain) -> None:
        domain.give_sandbox("c1")
        assert await domain.endpoints.connect("c1", "web", EndpointSpec(network="front"))
        with pytest.raises(PermissionDenied,
                           match="endpoint with name web already exists in network front"):
            await domain.endpoints.connect("c1", "web", EndpointSpec(network="front"))
        assert len(domain.store.endpoints(container_id="c1")) == 1
    run(tmp_path, scenario)


def test_connecting_a_stopped_container_again_changes_nothing(tmp_path: Path) -> None:
    """As Docker: a container without a sandbox keeps the config it has."""
    async def scenario(domain: Domain) -> None:
        first = EndpointSpec(network="front", aliases=["one"])
        assert await domain.endpoints.connect("c1", "web", first) is None
        again = EndpointSpec(network="front", aliases=["two"])
        assert await domain.endpoints.connect("c1", "web", again) is None
        assert [e.aliases for e in domain.store.endpoints(container_id="c1")] == [["one"]]
    run(tmp_path, scenario)


def test_connect_wires_a_container_that_has_a_sandbox(tmp_path: Path) -> None:
    async def scenario(domain: Domain) -> None:
        domain.give_sandbox("c1")
        view = await domain.endpoints.connect(
            "c1", "web", EndpointSpec(network="pinned", ipv4_address="10.9.0.7",
                                      aliases=["api", "api"]))
        assert view is not None and view.network.name == "pinned"
        assert view.record.aliases == ["api"]
        assert view.record.ipv4_requested == "10.9.0.7"
        assert ("wire", "pinned") in domain.wiring.calls
        assert domain.wiring.calls[-1] == ("firewall", "")
    run(tmp_path, scenario)


def test_a_failed_wiring_leaves_no_endpoint(tmp_path: Path) -> None:
    async def scenario(domain: Domain) -> None:
        domain.give_sandbox("c1")
        domain.wiring.fail_wire = True
        with pytest.raises(OSError, match="wiring failed"):
            await domain.endpoints.connect("c1", "web", EndpointSpec(network="front"))
        assert domain.store.endpoints(container_id="c1") == []
        assert ("unwire", "front") in domain.wiring.calls
    run(tmp_path, scenario)


def test_disconnect_checks_and_records(tmp_path: Path) -> None:
    async def scenario(domain: Domain) -> None:
        with pytest.raises(InvalidArgument, match="disconnected from host network"):
            await domain.endpoints.disconnect("c1", "host", force=False)
        # Not started: the choice is recorded, so the start leaves the network out.
        await domain.endpoints.disconnect("c1", "front", force=False)
        [recorded] = domain.store.endpoints(container_id="c1")
        assert recorded.state == "disconnected"
        domain.give_sandbox("c2")
        with pytest.raises(Internal, match="container c2 is not connected to network front"):
            await domain.endpoints.disconnect("c2", "front", force=False)
        await domain.endpoints.disconnect("c2", "front", force=True)
        await domain.endpoints.connect("c2", "web", EndpointSpec(network="front"))
        await domain.endpoints.disconnect("c2", "front", force=False)
        [endpoint] = domain.store.endpoints(container_id="c2")
        assert endpoint.state == "disconnected" and not endpoint.wired
        assert domain.wiring.calls[-3:] == [("unwire", "front"), ("route", "c2"),
                                            ("firewall", "")]
    run(tmp_path, scenario)
