"""After a restart: what a crash in the middle of a call left behind.

A RunPodSandbox or CreateContainer cut short by a crash leaves a labelled
berth container (and, for a pod, its network) that no record names; a
container removed behind the service's back (`docker rm`) leaves a record
without a container. Once the container service answers, the first are
removed and the second forgotten.

The network sandboxes of pods and the rootfs leases of image volumes are
taken with owner "cri": this service owns the list of those that exist and
pushes it (`ForgetGone`, `ReleaseGoneRootfs`) at its start and whenever the
network or image service comes back after a restart, as the container
service does for its containers (docs/design.md "Reconcile after a crash"),
retried until each peer has taken it. What is taken after a sweep began is
kept (`before_nano`), and so is what a call under way holds (a pod or an
image volume not on record yet).
"""

from __future__ import annotations

import contextlib
import logging

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.image.v1.image_pb2_grpc import ImageServiceStub
from berth.network.v1 import network_pb2
from berth.network.v1.network_pb2_grpc import NetworkServiceStub
from berth.types.v1 import types_pb2
from services.common.config import Config
from services.common.errors import BerthError
from services.common.peers import PeerClient, channel
from services.common.sweeps import PeerSweeps
from services.cri import labels
from services.cri.containers import Containers, parse_time, volume_key
from services.cri.imagevolumes import holder
from services.cri.peers import OWNER, PEER_WAIT_SECONDS, Peers
from services.cri.sandboxes import Sandboxes

log = logging.getLogger("berth.cri")

_SWEEP_TIMEOUT_SECONDS = 60


async def _labelled(peers: Peers) -> list[container_pb2.ContainerSummary]:
    request = container_pb2.ListContainersRequest(all=True, filters=types_pb2.Filters(
        filters={"label": types_pb2.StringList(values=[labels.TYPE])}))
    response = await peers.containers.List(request, wait_for_ready=True,
                                           timeout=PEER_WAIT_SECONDS * 4)
    return list(response.containers)


async def _made_before(peers: Peers, summary: container_pb2.ContainerSummary,
                       started_ns: int) -> bool:
    """Whether the container predates `started_ns`; a list gives whole
    seconds, so one made in the start's second is inspected for its time."""
    started_second = started_ns // 1_000_000_000
    if summary.created != started_second:
        return summary.created < started_second
    try:
        inspected = await peers.inspect_container(summary.id)
    except BerthError:          # kept: a later start of the service looks again
        return False
    return inspected is not None and parse_time(inspected.created) < started_ns


async def reconcile(peers: Peers, sandboxes: Sandboxes, containers: Containers,
                    started_ns: int) -> None:
    """Containers made after `started_ns` (unix time) belong to calls of this run."""
    try:
        found = await _labelled(peers)
    except BerthError as exc:   # the container service stays away
        log.warning("cri: no reconcile with the container service: %s", exc.message)
        return
    known = {s.pause_id for s in sandboxes.sandboxes.values()} | set(containers.records)
    orphans = [c for c in found
               if c.id not in known and await _made_before(peers, c, started_ns)]
    for orphan in orphans:
        sandbox_id = orphan.labels.get(labels.SANDBOX_ID, "")
        log.info("cri: removing %s left by an interrupted call", orphan.id[:12])
        with contextlib.suppress(BerthError):
            await peers.containers.Remove(container_pb2.RemoveContainerRequest(
                id=orphan.id, force=True, remove_volumes=True))
        if orphan.labels.get(labels.TYPE) == labels.POD_SANDBOX and sandbox_id \
                and sandboxes.find(sandbox_id) is None:
            with contextlib.suppress(BerthError):
                await peers.destroy_sandbox(sandbox_id)
    alive = {c.id for c in found}
    for cid in [cid for cid in containers.records if cid not in alive]:
        await containers.forget(cid)


def image_volume_holders(containers: Containers) -> set[str]:
    """The lease holders of the image volumes of the containers on record or
    being created."""
    configs = [(volume_key(r.sandbox_id, r.config.metadata), r.config)
               for r in containers.records.values()] + list(containers.creating.items())
    return {holder(key, index) for key, config in configs
            for index, mount in enumerate(config.mounts) if mount.image.image}


class PeerSweeper:
    """Keeps the network and image services swept of the pods and image
    volumes this service does not know, at its start and whenever either
    service comes back after a restart (services/common/sweeps.py, as the
    container service does for its containers)."""

    def __init__(self, config: Config, sandboxes: Sandboxes, containers: Containers) -> None:
        self._sandboxes = sandboxes
        self._containers = containers
        self._channels = {peer: channel(config, peer, own_connection=True)
                          for peer in ("network", "image")}
        self._network = PeerClient("network", NetworkServiceStub, self._channels["network"])
        self._images = PeerClient("image", ImageServiceStub, self._channels["image"])
        self._sweeps = PeerSweeps("cri", self._channels, {
            "network": self._sweep_network, "image": self._sweep_images})

    def start(self) -> None:
        self._sweeps.start()

    async def close(self) -> None:
        await self._sweeps.close()
        for open_channel in self._channels.values():
            await open_channel.close()

    async def _sweep_network(self, before_ns: int) -> list[str]:
        pods = set(self._sandboxes.sandboxes) | self._sandboxes.creating
        reply = await self._network.ForgetGone(network_pb2.ForgetGoneRequest(
            owner=OWNER, containers=sorted(pods), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.containers)

    async def _sweep_images(self, before_ns: int) -> list[str]:
        reply = await self._images.ReleaseGoneRootfs(image_pb2.ReleaseGoneRootfsRequest(
            owner=OWNER, holders=sorted(image_volume_holders(self._containers)),
            before_nano=before_ns), timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)
