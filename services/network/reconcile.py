"""Reconcile after a crash: forget the network state of containers that are gone.

The container service owns the list of containers that exist and pushes it
here (ForgetGone) at its start and whenever this service comes back; the
network service never calls it, so dependencies stay one way. What a
container leaves here when a ForgetContainer is lost (this service was down
while the container was removed): endpoint rows (and with them their
addresses, as IPAM allocates from the rows), a sandbox with its netns file,
veths, published ports and firewall rules. Forgetting the container undoes
all of it, as ForgetContainer does.

Sandboxes carry the service that created them (`owner`): the cri service's
pod sandboxes are not containers and are never swept by the container
service's list. Endpoint rows are containers' only (a pod's addresses live
in the CNI result cache), so only the container service's list sweeps them.
"""

from __future__ import annotations

import logging

from services.common import owners
from services.network.manager import NetworkManager
from services.network.store import NetworkStore

log = logging.getLogger(__name__)


def gone_containers(store: NetworkStore, owner: str, existing: set[str],
                    before_ns: int) -> list[str]:
    """IDs with network state from before `before_ns` that `owner` no longer lists."""
    sandboxes = store.sandboxes()
    candidates = {s.container_id for s in sandboxes
                  if s.owner == owner and s.created_ns < before_ns}
    if owner == owners.CONTAINER:  # its list of IDs covers the endpoint rows
        others = {s.container_id for s in sandboxes if s.owner != owner}
        candidates |= {e.container_id for e in store.endpoints()
                       if e.created_ns < before_ns and e.container_id not in others}
    return sorted(candidates - existing)


async def forget_gone(manager: NetworkManager, owner: str, existing: set[str],
                      before_ns: int) -> list[str]:
    """Forget every container `owner` no longer lists; the IDs forgotten."""
    gone = gone_containers(manager.store, owner, existing, before_ns)
    for container_id in gone:
        log.warning("forgetting the network state of %s, which no longer exists",
                    container_id[:12])
        await manager.forget_container(container_id)
    return gone
