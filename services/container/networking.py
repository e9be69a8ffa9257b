"""Docker's network connect of a container, from the container's side, and
the removal of a legacy link."""

from __future__ import annotations

import asyncio

from berth.network.v1 import network_pb2
from services.common.errors import Internal, NotFound
from services.container.containers import Manager
from services.container.links import Link


async def connect_network(manager: Manager, ref: str,
                          endpoint: network_pb2.EndpointRequest) -> None:
    """Connect through the network service; a running container's
    /etc/resolv.conf is rewritten in place (it is bind-mounted) when the
    connect changed it, as Docker does on a first user network."""
    container = manager.get(ref)
    async with manager.lock(container.id):
        reply = await manager.peers.connect(container.id, container.name, endpoint)
        if reply.resolv_conf and container.running:
            path = manager.bundle(container).path / "resolv.conf"
            if await asyncio.to_thread(path.read_text) != reply.resolv_conf:
                await asyncio.to_thread(path.write_text, reply.resolv_conf)


def remove_link(manager: Manager, name: str) -> None:
    """`/parent/alias`: the parent forgets the link, as moby's rmLink."""
    full = name if name.startswith("/") else "/" + name
    parent_name, _, alias = full.rpartition("/")
    if not parent_name:
        manager.get(alias)
        raise Internal("Conflict, cannot remove the default link name of the container")
    parent = next((c for c in manager.containers.values()
                   if c.name == parent_name.lstrip("/")), None)
    links = list(parent.host_config.links) if parent is not None else []
    kept = [text for text in links if Link.parse(text).alias != alias]
    if parent is None or kept == links:
        raise NotFound(f"No such container: {name}")
    del parent.host_config.links[:]
    parent.host_config.links.extend(kept)
    manager.save_host_config(parent)
