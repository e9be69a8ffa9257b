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
fails is retried with back-off until it succeeds. The peers never call the
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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from services.common.config import Config
from services.common.errors import BerthError, Unimplemented
from services.common.peers import PeerClient, channel
from services.container.peers import OWNER
from services.container.store import Container

if TYPE_CHECKING:
    from services.container.containers import Manager

log = logging.getLogger(__name__)

_SWEEP_TIMEOUT_SECONDS = 60
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30


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


Sweep = Callable[[set[str], int], Awaitable[list[str]]]


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
        self._sweeps: dict[str, Sweep] = {
            "image": self._sweep_image, "network": self._sweep_network,
            "volume": self._sweep_volume}
        self._wanted = {peer: asyncio.Event() for peer in self._channels}
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        """Remove the AutoRemove containers left stopped, then keep every peer swept."""
        self._manager.missed = self.sweep_soon
        for container in list(self._manager.containers.values()):
            if removed_on_restore(container):
                log.info("removing %s (AutoRemove, not running) on restore", container.id[:12])
                self._tasks.append(asyncio.create_task(self._remove(container.id)))
        self._tasks += [asyncio.create_task(self._keep_swept(peer)) for peer in self._channels]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for open_channel in self._channels.values():
            await open_channel.close()

    async def _remove(self, container_id: str) -> None:
        try:
            await self._manager.remove(container_id, force=True, remove_volumes=True)
        except BerthError as exc:
            log.warning("removing %s on restore failed: %s", container_id[:12], exc.message)

    def sweep_soon(self, peer: str) -> None:
        """A release to `peer` failed: sweep it again as soon as it answers."""
        self._wanted[peer].set()

    def existing(self) -> set[str]:
        return set(self._manager.containers) | self._manager.creating

    async def _keep_swept(self, peer: str) -> None:
        retry_in = _RETRY_FIRST_SECONDS
        while True:
            self._wanted[peer].clear()
            await _until_ready(self._channels[peer])
            before_ns = time.time_ns()
            try:
                gone = await self._sweeps[peer](self.existing(), before_ns)
            except Unimplemented as error:
                log.warning("the %s service cannot reconcile: %s", peer, error.message)
                return
            except BerthError as error:
                log.warning("reconcile with the %s service failed (%s); retrying in %.1fs",
                            peer, error.message, retry_in)
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, _RETRY_MAX_SECONDS)
                continue
            retry_in = _RETRY_FIRST_SECONDS
            if gone:
                log.info("the %s service dropped what %d removed containers held",
                         peer, len(gone))
            await self._until_needed(peer)

    async def _until_needed(self, peer: str) -> None:
        """Until the connection to `peer` drops (it will be swept once back) or
        a release to it fails."""
        waits = [asyncio.create_task(_until_not_ready(self._channels[peer])),
                 asyncio.create_task(self._wanted[peer].wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _sweep_image(self, existing: set[str], before_ns: int) -> list[str]:
        reply = await self._images.ReleaseGoneRootfs(image_pb2.ReleaseGoneRootfsRequest(
            owner=OWNER, holders=sorted(existing), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)

    async def _sweep_network(self, existing: set[str], before_ns: int) -> list[str]:
        reply = await self._networks.ForgetGone(network_pb2.ForgetGoneRequest(
            owner=OWNER, containers=sorted(existing), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.containers)

    async def _sweep_volume(self, existing: set[str], before_ns: int) -> list[str]:
        reply = await self._volumes.ReleaseGone(volume_pb2.ReleaseGoneRequest(
            holders=sorted(existing), before_nano=before_ns), timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)


async def _until_ready(peer_channel: grpc.aio.Channel) -> None:
    state = peer_channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        await peer_channel.wait_for_state_change(state)
        state = peer_channel.get_state(try_to_connect=True)


async def _until_not_ready(peer_channel: grpc.aio.Channel) -> None:
    state = peer_channel.get_state()
    while state == grpc.ChannelConnectivity.READY:
        await peer_channel.wait_for_state_change(state)
        state = peer_channel.get_state()
