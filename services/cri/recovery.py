"""After a restart: what a crash in the middle of a call left behind.

A RunPodSandbox or CreateContainer cut short by a crash leaves a labelled
berth container (and, for a pod, its network) that no record names; a
container removed behind the service's back (`docker rm`) leaves a record
without a container. Once the container service answers, the first are
removed and the second forgotten.
"""

from __future__ import annotations

import contextlib
import logging

from berth.container.v1 import container_pb2
from berth.types.v1 import types_pb2
from services.common.errors import BerthError
from services.cri import labels
from services.cri.containers import Containers
from services.cri.peers import PEER_WAIT_SECONDS, Peers
from services.cri.sandboxes import Sandboxes

log = logging.getLogger("berth.cri")


async def _labelled(peers: Peers) -> list[container_pb2.ContainerSummary]:
    request = container_pb2.ListContainersRequest(all=True, filters=types_pb2.Filters(
        filters={"label": types_pb2.StringList(values=[labels.TYPE])}))
    response = await peers.containers.List(request, wait_for_ready=True,
                                           timeout=PEER_WAIT_SECONDS * 4)
    return list(response.containers)


async def reconcile(peers: Peers, sandboxes: Sandboxes, containers: Containers,
                    started: float) -> None:
    """Containers made after `started` (unix time) belong to calls of this run."""
    try:
        found = await _labelled(peers)
    except BerthError as exc:   # the container service stays away
        log.warning("cri: no reconcile with the container service: %s", exc.message)
        return
    known = {s.pause_id for s in sandboxes.sandboxes.values()} | set(containers.records)
    for orphan in (c for c in found if c.id not in known and c.created < int(started)):
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
