"""Docker's network connect of a container, from the container's side."""

from __future__ import annotations

import asyncio

from berth.network.v1 import network_pb2
from services.container.containers import Manager


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
