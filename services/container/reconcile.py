"""Reconcile after a crash: the container service owns the list of containers
that exist, and its peers drop what they hold for containers that are gone.

The peers' state of a container (the image service's rootfs lease, the network
service's endpoints and sandbox, the volume service's leases) is released when
the container is removed. A release that fails because the peer is away
(killed, restarting) would leave that state behind forever, so the container
service pushes its list to each peer: `ReleaseGoneRootfs`, `ForgetGone` and
`ReleaseGone` drop what the list does not name. It does so at its start (after
restoring its containers), whenever the connection to a peer comes back (the
peer restarted), and after a removal whose release a peer missed; a sweep that
fails is retried with back-off until it succeeds (services/common/sweeps.py,
which the cri service uses for its pods too). The peers never call the
container service, so dependencies stay one way.

What a peer holds for a container whose create is still in flight counts as
existing (`Manager.creating`), and the peers keep what was taken after the
list was made (`before_nano`).

On restore, a container with AutoRemove that is not running is removed, as
Docker does (`removed_on_restore`): the daemon that was to remove it died.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from services.common.config import Config
from services.common.errors import BerthError
from services.common.peers import PeerClient, channel
from services.common.sweeps import PeerSweeps
from services.container.peers import OWNER
from services.container.store import Container

if TYPE_CHECKING:
    from services.container.containers import Manager

log = logging.getLogger(__name__)

_SWEEP_TIMEOUT_SECONDS = 60


def removed_on_restore(container: Container) -> bool:
    """Docker's rule: an AutoRemove container that is not running is removed
    on restore (stopped, or created by a `docker run --rm` that never started it)."""
    return container.host_config.auto_remove and container.state.status in (
        "created", "exited", "dead")


def remove_stray_bundles(root: Path, known: set[str]) -> None:
    """Delete bundle directories no container record names (a create cut short)."""
    for directory in root.iterdir():
        if directory.name not in known and not (directory / "rootfs").is_mount():
            log.warning("removing the bundle of %s, a create that did not finish",
                        directory.name[:12])
            shutil.rmtree(directory, ignore_errors=True)


class Reconciler:
    """Keeps each peer's per-container state in line with the containers that exist."""

    def __init__(self, config: Config, manager: Manager) -> None:
        self._manager = manager
        self._channels = {peer: channel(config, peer, own_connection=True)
                          for peer in ("image", "network", "volume")}
        self._images = PeerClient("image", image_pb2_grpc.ImageServiceStub,
                                  self._channels["image"])
        self._networks = PeerClient("network", network_pb2_grpc.NetworkServiceStub,
                                    self._channels["network"])
        self._volumes = PeerClient("volume", volume_pb2_grpc.VolumeServiceStub,
                                   self._channels["volume"])
        self._sweeps = PeerSweeps("container", self._channels, {
            "image": self._sweep_image, "network": self._sweep_network,
            "volume": self._sweep_volume})
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Remove the AutoRemove containers left stopped, then keep every peer swept."""
        self._manager.missed = self._sweeps.sweep_soon
        for container in list(self._manager.containers.values()):
            if removed_on_restore(container):
                log.info("removing %s (AutoRemove, not running) on restore", container.id[:12])
                self._tasks.append(asyncio.create_task(self._remove(container.id)))
        self._sweeps.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._sweeps.close()
        for open_channel in self._channels.values():
            await open_channel.close()

    async def _remove(self, container_id: str) -> None:
        try:
            await self._manager.remove(container_id, force=True, remove_volumes=True)
        except BerthError as exc:
            log.warning("removing %s on restore failed: %s", container_id[:12], exc.message)

    def existing(self) -> set[str]:
        return set(self._manager.containers) | self._manager.creating

    async def _sweep_image(self, before_ns: int) -> list[str]:
        reply = await self._images.ReleaseGoneRootfs(image_pb2.ReleaseGoneRootfsRequest(
            owner=OWNER, holders=sorted(self.existing()), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)

    async def _sweep_network(self, before_ns: int) -> list[str]:
        reply = await self._networks.ForgetGone(network_pb2.ForgetGoneRequest(
            owner=OWNER, containers=sorted(self.existing()), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.containers)

    async def _sweep_volume(self, before_ns: int) -> list[str]:
        reply = await self._volumes.ReleaseGone(volume_pb2.ReleaseGoneRequest(
            holders=sorted(self.existing()), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)
