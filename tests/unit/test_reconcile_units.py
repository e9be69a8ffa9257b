"""Reconcile after a crash, the parts without an engine: which network state
and which rootfs leases a peer drops for an owner's list, the stores' owner
columns on databases from before them, Docker's remove-on-restore rule, and the
container manager's side on fakes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from berth.container.v1 import container_pb2 as pb
from berth.image.v1 import image_pb2
from services.common.config import Config
from services.common.errors import Internal
from services.container.reconcile import Reconciler, remove_stray_bundles, removed_on_restore
from services.container.store import Container
from services.image.store import ImageStore
from services.network.reconcile import gone_containers
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord
from tests.support.fakes import FakeEngine, container_manager


@pytest.fixture
def network_store(tmp_path: Path) -> NetworkStore:
    store = NetworkStore(tmp_path / "network.db")
    store.save_network(NetworkRecord(id="n1", name="bridge", driver="bridge", created="now"))
    return store


def test_network_state_of_gone_containers_is_found(network_store: NetworkStore) -> None:
    for cid in ("alive", "gone", "stopped-gone"):
        network_store.save_endpoint(EndpointRecord(network_id="n1", container_id=cid,
                                                   endpoint_id=f"e-{cid}"))
    network_store.save_sandbox(SandboxRecord(container_id="alive", owner="container"))
    network_store.save_sandbox(SandboxRecord(container_id="gone", owner="container"))
    network_store.save_sandbox(SandboxRecord(container_id="sandbox-only", owner="container"))
    network_store.save_sandbox(SandboxRecord(container_id="pod", owner="cri", mode="cni"))
    network_store.save_sandbox(SandboxRecord(container_id="unowned"))
    cutoff = time.time_ns()
    network_store.save_endpoint(EndpointRecord(network_id="n1", container_id="starting",
                                               endpoint_id="e-starting"))
    assert gone_containers(network_store, "container", {"alive"}, cutoff) == [
        "gone", "sandbox-only", "stopped-gone"]
    assert gone_containers(network_store, "cri", set(), cutoff) == ["pod"]
    assert gone_containers(network_store, "cri", {"pod"}, cutoff) == []


def test_old_network_database_gets_owners(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE sandboxes (container_id TEXT PRIMARY KEY, mode TEXT NOT NULL)")
        old.executemany("INSERT INTO sandboxes VALUES (?, ?)", [("c", "bridge"), ("p", "cni")])
    store = NetworkStore(path)
    owners = {s.container_id: s.owner for s in store.sandboxes()}
    assert owners == {"c": "container", "p": ""}
    assert gone_containers(store, "container", set(), time.time_ns()) == ["c"]


def test_image_leases_per_owner_and_age(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image.db")
    store.add_lease("c1", "sha256:a", "chain", "container")
    store.add_lease("build-x-0", "sha256:a", "chain", "build")
    cutoff = time.time_ns()
    store.add_lease("c2", "sha256:a", "chain", "container")
    assert store.holders_of("container", cutoff) == {"c1"}
    assert store.holders_of("build", cutoff) == {"build-x-0"}


def test_old_image_database_gets_owners(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE leases (holder TEXT PRIMARY KEY, image_id TEXT NOT NULL, "
                    "chain_id TEXT NOT NULL)")
        old.executemany("INSERT INTO leases VALUES (?, 'sha256:a', 'chain')",
                        [("c" * 64,), ("build-1-0",)])
    store = ImageStore(path)
    assert store.holders_of("container", time.time_ns()) == {"c" * 64}
    assert store.holders_of("build", time.time_ns()) == {"build-1-0"}


@pytest.mark.parametrize(("status", "auto_remove", "removed"), [
    ("exited", True, True), ("created", True, True), ("dead", True, True),
    ("running", True, False), ("paused", True, False), ("exited", False, False)])
def test_auto_remove_containers_not_running_are_removed_on_restore(
        status: str, auto_remove: bool, removed: bool) -> None:
    container = Container(id="c", name="n", created_ns=0, image="i", image_id="i",
                          lower_dirs=[], config=pb.ContainerConfig(),
                          host_config=pb.HostConfig(auto_remove=auto_remove),
                          networking_config=pb.NetworkingConfig())
    container.state.status = status
    assert removed_on_restore(container) is removed


def test_stray_bundles_are_removed(tmp_path: Path) -> None:
    (tmp_path / "known" / "upper").mkdir(parents=True)
    (tmp_path / "half-created" / "upper").mkdir(parents=True)
    remove_stray_bundles(tmp_path, {"known"})
    assert [p.name for p in tmp_path.iterdir()] == ["known"]


# -- the container manager's side, on fakes (tests/support/fakes.py) -----------


def run_on_fakes(root: Path, scenario: Callable[[FakeEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = container_manager(root)
        try:
            await scenario(engine)
        finally:
            await engine.close()
    asyncio.run(main())


async def create(engine: FakeEngine, auto_remove: bool = False) -> str:
    cid, _ = await engine.manager.create(pb.CreateContainerRequest(
        config=pb.ContainerConfig(image="busybox"),
        host_config=pb.HostConfig(network_mode="none", auto_remove=auto_remove)))
    return cid


def test_a_create_in_flight_counts_as_existing(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        seen: list[bool] = []
        acquire = engine.peers.acquire_rootfs

        async def acquire_and_look(image: str, holder: str) -> image_pb2.Rootfs:
            seen.append(holder in engine.manager.creating)
            return await acquire(image, holder)
        engine.peers.acquire_rootfs = acquire_and_look
        cid = await create(engine)
        assert seen == [True]
        assert engine.manager.creating == set() and cid in engine.manager.containers
    run_on_fakes(tmp_path, scenario)


def test_a_missed_release_is_named_once_the_container_is_gone(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        missed: list[tuple[str, bool]] = []
        engine.manager.missed = lambda peer: missed.append(
            (peer, cid in engine.manager.containers))

        async def image_away(holder: str) -> None:
            raise Internal("image service unavailable")
        engine.peers.release_rootfs = image_away
        await engine.manager.remove(cid)
        assert missed == [("image", False)]
        assert engine.peers.forgotten == [cid] and engine.peers.volumes.released == [cid]
    run_on_fakes(tmp_path, scenario)


def test_stopped_auto_remove_containers_are_removed_on_restore(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        removed_one = await create(engine, auto_remove=True)
        kept = await create(engine)
        reconciler = Reconciler(Config(data_root=tmp_path / "data",
                                       exec_root=tmp_path / "exec"), engine.manager)
        reconciler.start()
        try:
            async with asyncio.timeout(10):
                while removed_one in engine.manager.containers:
                    await asyncio.sleep(0.01)
        finally:
            await reconciler.close()
        assert set(engine.manager.containers) == {kept}
        assert engine.peers.leases == {kept}
    run_on_fakes(tmp_path, scenario)

