"""Reconcile after a crash: kill -9 of the container, network and image
services during `docker run --rm` loops leaves nothing that belongs to no
container — no container, endpoint, address, netns, veth, nft rule, mount
or image hold — neither once the services are back nor after a clean
engine restart; and the image the runs used can be removed. A peer that
comes back is swept of the container service's holders only."""

from __future__ import annotations

import ipaddress
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from pyroute2 import IPRoute

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from services.common.config import Config
from tests.support.engine import DOCKER_CLI, Engine
from tests.support.polling import wait_for
from tests.support.services import kill_service

IMAGE = "reconcile-victim"
KILLS = 3
# How long the run loop goes on between two kills: the next kill falls in
# the middle of some run's create, start, exit or remove.
RUNNING_BETWEEN_KILLS_SECONDS = 2.5
FAILED_RUN_PAUSE_SECONDS = 0.2


@pytest.fixture(scope="module")
def victim(engine: Engine, busybox: str) -> str:
    """An image of its own (one tag, own ID): `docker rmi` refuses it while
    a container's hold on it is left over."""
    created = engine.docker("create", busybox, "true").stdout.decode().strip()
    engine.docker("commit", created, IMAGE)
    engine.docker("rm", created)
    return IMAGE


@dataclass
class RunLoop:
    """`docker run --rm` over and over in a thread, failures included."""
    engine: Engine
    succeeded: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = subprocess.run(
                    [DOCKER_CLI, "run", "--rm", "-p", "127.0.0.1::80", IMAGE, "true"],
                    env=self.engine.env(), capture_output=True, timeout=90)
                if result.returncode == 0:
                    self.succeeded += 1
                else:
                    self.failed += 1
                    self._stop.wait(FAILED_RUN_PAUSE_SECONDS)   # a service is away
            except subprocess.TimeoutExpired:
                self.failed += 1

    def __enter__(self) -> RunLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Leftovers:
    containers: int
    endpoints: int
    sandboxes: int
    addresses: int
    netns: int
    veths: int
    nat_rules: int
    mounts: int
    holds: int

    @property
    def total(self) -> int:
        return sum(self.__dict__.values())


def _rows(database: Path, sql: str) -> list[tuple]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def leftovers(engine: Engine) -> Leftovers:
    """What remains while no container exists (the runs are all --rm)."""
    prefix = Config(exec_root=engine.exec_root).instance_prefix
    network_db = engine.data_root / "network" / "state.db"
    netns_dir = engine.exec_root / "netns"
    with IPRoute() as ipr:
        links = [link.get_attr("IFLA_IFNAME") or "" for link in ipr.get_links()]
    nat = subprocess.run(["nft", "list", "table", "ip", prefix], capture_output=True,
                         text=True, check=False).stdout
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return Leftovers(
        containers=len(engine.docker("ps", "-aq").stdout.split()),
        endpoints=len(_rows(network_db, "SELECT 1 FROM endpoints")),
        sandboxes=len(_rows(network_db, "SELECT 1 FROM sandboxes")),
        addresses=len(_rows(network_db, "SELECT 1 FROM endpoints WHERE ip != ''")),
        netns=len(list(netns_dir.iterdir())) if netns_dir.exists() else 0,
        veths=sum(name.startswith(prefix + "v") for name in links),
        nat_rules=nat.count("dnat to"),
        mounts=sum(m.startswith(str(engine.root)) and "/containers/" in m for m in mounts),
        holds=len(_rows(engine.data_root / "image" / "state.db", "SELECT 1 FROM leases")))


def settled(engine: Engine) -> Leftovers:
    """Leftovers once the services have caught up (they reconcile in the background)."""
    found: list[Leftovers] = []

    def clean() -> bool:
        found.append(leftovers(engine))
        return found[-1].total == 0
    try:
        wait_for(clean, timeout=60, message="the services to reconcile")
    except AssertionError:
        pass
    return found[-1]


def gets_the_first_address(engine: Engine) -> bool:
    """Whether a new container gets the first address of the default bridge
    (the gateway's is the one before), so no allocation is left over."""
    out = engine.docker("run", "--rm", IMAGE, "ip", "-4", "-o", "addr", "show", "eth0")
    address = ipaddress.IPv4Interface(out.stdout.decode().split()[3])
    return address.ip == address.network[2]


@pytest.mark.parametrize("service", ["container", "network", "image"])
def test_kill_during_run_loops_leaves_nothing(engine: Engine, victim: str,
                                              service: str) -> None:
    assert gets_the_first_address(engine)
    with RunLoop(engine) as loop:
        for _ in range(KILLS):
            time.sleep(RUNNING_BETWEEN_KILLS_SECONDS)
            kill_service(engine, service)
        time.sleep(RUNNING_BETWEEN_KILLS_SECONDS)
    left = settled(engine)
    print(f"\n{service}: {KILLS} kills, {loop.succeeded} runs ({loop.failed} failed), "
          f"left: {left}")
    assert loop.succeeded
    assert left.total == 0, left
    assert gets_the_first_address(engine)


def test_a_peer_that_comes_back_is_swept_of_the_container_services_only(
        engine: Engine, victim: str) -> None:
    """No release failed here: the sweep comes from the peer coming back, and
    what other services own (a lease, a pod sandbox) stays."""
    images = image_pb2_grpc.ImageServiceStub(
        grpc.insecure_channel(f"unix://{engine.exec_root}/image.sock"))
    networks = network_pb2_grpc.NetworkServiceStub(
        grpc.insecure_channel(f"unix://{engine.exec_root}/network.sock"))
    image_db = engine.data_root / "image" / "state.db"
    network_db = engine.data_root / "network" / "state.db"
    gone, other, pod = "0" * 64, "another-service-0", "1" * 64
    # Not "cri": the cri service sweeps its own when a peer comes back too
    # (test_cri_pods.py), and would drop these as pods it does not know.
    another = "another-service"
    images.AcquireRootfs(image_pb2.AcquireRootfsRequest(image=victim, holder=gone,
                                                        owner="container"))
    images.AcquireRootfs(image_pb2.AcquireRootfsRequest(image=victim, holder=other,
                                                        owner=another))
    networks.CreateSandbox(network_pb2.CreateSandboxRequest(
        container_id=gone, network_mode="none", owner="container"))
    networks.CreateSandbox(network_pb2.CreateSandboxRequest(
        container_id=pod, network_mode="none", owner=another))
    try:
        kill_service(engine, "image")
        kill_service(engine, "network")
        wait_for(lambda: _rows(image_db, "SELECT holder FROM leases") == [(other,)],
                 timeout=60, message="the image service to be swept")
        wait_for(lambda: _rows(network_db, "SELECT container_id FROM sandboxes") == [(pod,)],
                 timeout=60, message="the network service to be swept")
    finally:
        images.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=other))
        networks.DestroySandbox(network_pb2.DestroySandboxRequest(container_id=pod))
    assert leftovers(engine).total == 0


def test_nothing_left_after_a_clean_restart(engine: Engine, victim: str) -> None:
    engine.stop()
    engine.start()
    left = settled(engine)
    print(f"\nafter a clean restart, left: {left}")
    assert left.total == 0, left
    assert gets_the_first_address(engine)
    engine.docker("rmi", victim)
    assert victim.encode() not in engine.docker("images").stdout

