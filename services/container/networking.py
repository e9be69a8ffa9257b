"""Docker's network connect and disconnect of a container, from the
container's side, and the removal of a legacy link."""

from __future__ import annotations

import asyncio

from berth.network.v1 import network_pb2
from services.common.errors import Internal, NotFound
from services.container.containers import Manager
from services.container.links import Link
from services.container.store import Container


async def connect_network(manager: Manager, ref: str,
                          endpoint: network_pb2.EndpointRequest) -> None:
    """Connect through the network service; a running container's
    /etc/resolv.conf and /etc/hosts are rewritten in place (they are
    bind-mounted) when the connect changed them: Docker adds the container's
    new addresses to /etc/hosts, and a first user network brings the resolver."""
    container = manager.get(ref)
    async with manager.lock(container.id):
        reply = await manager.peers.connect(container.id, container.name, endpoint)
        await _follow(manager, container, "resolv.conf", reply.resolv_conf)
        await _follow(manager, container, "hosts", reply.hosts)


async def disconnect_network(manager: Manager, ref: str, network: str, force: bool) -> None:
    """Disconnect through the network service; a running container's
    /etc/hosts loses the lines of the addresses it had there, as in Docker."""
    container = manager.get(ref)
    async with manager.lock(container.id):
        reply = await manager.peers.disconnect(container.id, network, force)
        await _follow(manager, container, "hosts", reply.hosts)


async def _follow(manager: Manager, container: Container, name: str, content: str) -> None:
    """Bring the bundle's copy of a network file to `content` (empty: no live sandbox)."""
    if not content or not container.running:
        return
    path = manager.bundle(container).path / name
    if await asyncio.to_thread(path.read_text) != content:
        await asyncio.to_thread(path.write_text, content)


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
