"""After a restart: what a crash in the middle of a call left behind.

A RunPodSandbox or CreateContainer cut short by a crash leaves a labelled
berth container (and, for a pod, its network) that no record names; a
container removed behind the service's back (`docker rm`) leaves a record
without a container. Once the container service answers, the first are
removed and the second forgotten.

The network sandboxes of pods and the rootfs leases of image volumes are
taken with owner "cri": this service owns the list of those that exist and
pushes it at start (`ForgetGone`, `ReleaseGoneRootfs`), as the container
service does for its containers (docs/design.md "Reconcile after a crash"),
retried until each peer has taken it. What is taken after the start is kept
(`before_nano`), so calls served meanwhile are not swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.network.v1 import network_pb2
from berth.types.v1 import types_pb2
from services.common.errors import BerthError, Unimplemented
from services.cri import labels
from services.cri.containers import Containers, parse_time, volume_key
from services.cri.imagevolumes import holder
from services.cri.peers import OWNER, PEER_WAIT_SECONDS, Peers
from services.cri.sandboxes import Sandboxes

log = logging.getLogger("berth.cri")

_SWEEP_TIMEOUT_SECONDS = 60
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30


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
    """The lease holders of the image volumes of the containers on record."""
    return {holder(volume_key(record.sandbox_id, record.config.metadata), index)
            for record in containers.records.values()
            for index, mount in enumerate(record.config.mounts) if mount.image.image}


async def sweep_peers(peers: Peers, sandboxes: Sandboxes, containers: Containers,
                      before_ns: int) -> None:
    """Push the pods and image volumes this service knows to the network and
    image services, which drop what of ours the lists do not name."""
    async def sweep_network() -> list[str]:
        reply = await peers.network.ForgetGone(network_pb2.ForgetGoneRequest(
            owner=OWNER, containers=sorted(sandboxes.sandboxes), before_nano=before_ns),
            wait_for_ready=True, timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.containers)

    async def sweep_images() -> list[str]:
        reply = await peers.images.ReleaseGoneRootfs(image_pb2.ReleaseGoneRootfsRequest(
            owner=OWNER, holders=sorted(image_volume_holders(containers)),
            before_nano=before_ns), wait_for_ready=True, timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)

    await asyncio.gather(_until_swept("network", sweep_network),
                         _until_swept("image", sweep_images))


async def _until_swept(peer: str, sweep: Callable[[], Awaitable[list[str]]]) -> None:
    retry_in = _RETRY_FIRST_SECONDS
    while True:
        try:
            gone = await sweep()
        except Unimplemented as exc:
            log.warning("cri: the %s service cannot reconcile: %s", peer, exc.message)
            return
        except BerthError as exc:
            log.warning("cri: reconcile with the %s service failed (%s); retrying in %.1fs",
                        peer, exc.message, retry_in)
            await asyncio.sleep(retry_in)
            retry_in = min(retry_in * 2, _RETRY_MAX_SECONDS)
            continue
        if gone:
            log.info("cri: the %s service dropped what %d gone pods or volumes held",
                     peer, len(gone))
        return
