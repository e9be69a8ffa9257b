"""Stand-ins for what the container and network domains drive, so their
logic runs in unit tests without root, runc, conmon, netlink or peers:
a runtime whose containers exit when the test says, peers that answer
without a network, a bundle builder that mounts nothing, and kernel wiring
that records what it was asked. The stores are the real ones on temp
SQLite files."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from berth.image.v1 import image_pb2
from berth.network.v1 import network_pb2
from berth.types.v1 import types_pb2
from berth.volume.v1 import volume_pb2
from services.common.config import Config
from services.common.events import EventBus
from services.container.bundle import Undo
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.runtime import Bundle, ConmonOptions, CreateFailed
from services.container.sessions import Sessions
from services.container.store import Container, ContainerStore
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore, SandboxRecord

IMAGE_ID = "sha256:" + "0" * 64


class FakeRuntime:
    """The runc/conmon wrapper without processes. A started container runs
    until the test calls exit() (or kills it); `calls` keeps the order of
    what the manager asked, as (operation, container id)."""

    # No such binary: no runtime features, so read-only mounts stay plain "ro".
    binary = "/nonexistent/fake-runc"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.create_error = ""                    # runc's message: the next creates fail
        self.conmon_ends: dict[str, list[socket.socket]] = {}
        self._pids = itertools.count(1000, 2)
        self._conmons: dict[str, int] = {}        # container id -> conmon pid
        self._exited: dict[int, asyncio.Event] = {}
        self._codes: dict[str, int] = {}

    async def create(self, cid: str, bundle: Bundle, opts: ConmonOptions) -> tuple[int, int]:
        self.calls.append(("create", cid))
        if self.create_error:
            raise CreateFailed(self.create_error)
        pid = next(self._pids)
        self._conmons[cid] = pid + 1
        self._exited[pid + 1] = asyncio.Event()
        self._codes.pop(cid, None)
        return pid, pid + 1

    def exit(self, cid: str, code: int) -> None:
        """The container's process ends with `code`."""
        self._codes[cid] = code
        self._exited[self._conmons[cid]].set()

    async def wait_exit(self, pid: int) -> None:
        await self._exited[pid].wait()

    async def start(self, cid: str) -> None:
        self.calls.append(("start", cid))

    async def kill(self, cid: str, signum: int, all_processes: bool = False) -> None:
        self.calls.append(("kill", cid))
        self.exit(cid, 128 + signum)

    async def pause(self, cid: str) -> None:
        self.calls.append(("pause", cid))

    async def resume(self, cid: str) -> None:
        self.calls.append(("resume", cid))

    async def delete(self, cid: str, force: bool = False) -> None:
        self.calls.append(("delete", cid))

    async def status(self, cid: str) -> str:
        return "running"

    def exit_code(self, cid: str) -> int | None:
        return self._codes.get(cid)

    def oom_killed(self, cid: str) -> bool:
        return False

    def remove_state(self, cid: str) -> None:
        self.calls.append(("remove_state", cid))

    @staticmethod
    def conmon_alive(pid: int, cid: str) -> bool:
        return False

    def connect_attach(self, bundle: Bundle) -> socket.socket:
        """Our end of a socket pair; the test writes conmon's packets on the other."""
        cid = bundle.path.name
        self.calls.append(("connect_attach", cid))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.conmon_ends.setdefault(cid, []).append(theirs)
        return ours

    def resize(self, bundle: Bundle, height: int, width: int) -> None:
        self.calls.append(("resize", bundle.path.name))

    @staticmethod
    def rotate_log(bundle: Bundle, rename: Callable[[], None]) -> None:
        rename()

    def close(self) -> None:
        for ends in self.conmon_ends.values():
            for end in ends:
                end.close()


class FakeVolumes:
    """The volume service stub as mounts.py calls it."""

    def __init__(self) -> None:
        self.released: list[str] = []

    async def Release(self, request: volume_pb2.ReleaseVolumeRequest  # noqa: N802
                      ) -> volume_pb2.ReleaseVolumeResponse:
        self.released.append(request.holder)
        return volume_pb2.ReleaseVolumeResponse()


class FakePeers:
    """Image and network services that lease a rootfs of nothing and keep
    no sandboxes."""

    def __init__(self) -> None:
        self.volumes = FakeVolumes()
        self.leases: set[str] = set()
        self.forgotten: list[str] = []

    async def acquire_rootfs(self, image: str, holder: str) -> image_pb2.Rootfs:
        self.leases.add(holder)
        config = image_pb2.ImageConfig(cmd=types_pb2.StringList(values=["sh"]))
        return image_pb2.Rootfs(image_id=IMAGE_ID, lower_dirs=["/nonexistent"],
                                image=image_pb2.Image(id=IMAGE_ID, config=config))

    async def release_rootfs(self, holder: str) -> None:
        self.leases.discard(holder)

    async def create_sandbox(self, request: network_pb2.CreateSandboxRequest
                             ) -> network_pb2.Sandbox:
        return network_pb2.Sandbox(container_id=request.container_id)

    async def get_sandbox(self, container_id: str) -> network_pb2.Sandbox | None:
        return None

    async def destroy_sandbox(self, container_id: str) -> None:
        pass

    async def rename_container(self, container_id: str, new_name: str) -> None:
        pass

    async def forget_container(self, container_id: str) -> None:
        self.forgotten.append(container_id)


class FakeBundleBuilder:
    """Prepares nothing: no rootfs mount, no sandbox, no config.json."""

    def __init__(self) -> None:
        self.prepared: list[str] = []

    async def prepare(self, container: Container, bundle: Bundle, undo: Undo,
                      find: Callable[[str], Container]) -> None:
        self.prepared.append(container.id)


@dataclass
class FakeEngine:
    manager: Manager
    sessions: Sessions
    runtime: FakeRuntime
    peers: FakePeers
    store: ContainerStore

    async def close(self) -> None:
        await self.manager.close()
        self.runtime.close()
        self.store.close()


def container_manager(root: Path) -> FakeEngine:
    """A container Manager on temp roots, with the fakes above. Build it
    inside the event loop that will run it."""
    config = Config(data_root=root / "data", exec_root=root / "exec")
    store = ContainerStore(config.service_dir("container") / "state.db")
    runtime, peers, events = FakeRuntime(), FakePeers(), EventBus("container")
    manager = Manager(config, events, store, runtime, peers, FakeBundleBuilder())
    sessions = Sessions(manager, ContainerEvents(events, manager))
    return FakeEngine(manager, sessions, runtime, peers, store)


@dataclass
class FakeWiring:
    """Kernel wiring that touches no kernel: addresses come from the subnet
    in order, and every call is recorded as (operation, name)."""

    store: NetworkStore
    fail_wire: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    _subnets: itertools.count = field(default_factory=lambda: itertools.count(20))

    async def bring_up_bridge(self, network: NetworkRecord) -> None:
        if not network.subnet:
            network.subnet = f"172.{next(self._subnets)}.0.0/16"
            network.gateway = str(ipaddress.IPv4Network(network.subnet)[1])
        self.calls.append(("bridge", network.name))
        self.store.save_network(network)

    async def delete_bridge(self, network: NetworkRecord) -> None:
        self.calls.append(("delete_bridge", network.name))

    async def bring_up(self, network: NetworkRecord) -> None:
        if network.driver == "bridge":
            await self.bring_up_bridge(network)

    async def take_down(self, network: NetworkRecord) -> None:
        if network.driver == "bridge":
            await self.delete_bridge(network)

    async def wire(self, sandbox: SandboxRecord, network: NetworkRecord,
                   endpoint: EndpointRecord) -> None:
        self.calls.append(("wire", network.name))
        if self.fail_wire:
            raise OSError("wiring failed")
        taken = {e.ip for e in self.store.endpoints(network_id=network.id) if e.ip}
        hosts = ipaddress.IPv4Network(network.subnet).hosts()
        endpoint.ip = next(str(h) for h in hosts
                           if str(h) not in taken and str(h) != network.gateway)
        endpoint.host_ifname, endpoint.ifname, endpoint.state = "vfake", "eth0", "connected"
        self.store.save_endpoint(endpoint)

    async def unwire(self, network: NetworkRecord, endpoint: EndpointRecord,
                     announce: bool = True) -> None:
        self.calls.append(("unwire", network.name))
        endpoint.ip = endpoint.host_ifname = endpoint.ifname = ""
        if self.store.endpoint(endpoint.network_id, endpoint.container_id) is not None:
            self.store.save_endpoint(endpoint)

    async def update_default_routes(self, sandbox: SandboxRecord) -> None:
        self.calls.append(("route", sandbox.container_id))

    async def apply_firewall(self) -> None:
        self.calls.append(("firewall", ""))
