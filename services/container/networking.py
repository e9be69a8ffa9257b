"""Docker's network connect and disconnect of a container, from the
container's side, and the removal of a legacy link."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

from berth.network.v1 import network_pb2
from services.common import etc_hosts
from services.common.errors import Internal, NotFound
from services.container.containers import Manager
from services.container.links import Link
from services.container.store import Container


async def connect_network(manager: Manager, ref: str,
                          endpoint: network_pb2.EndpointRequest) -> None:
    """Connect through the network service. A running container's files are
    edited in place (they are bind-mounted), as Docker does: /etc/hosts gets
    the lines of its new addresses appended, keeping what the user added, and
    /etc/resolv.conf is rewritten only when a first user network brings the
    embedded resolver, and not if the user edited it."""
    container = manager.get(ref)
    async with manager.lock(container.id):
        reply = await manager.peers.connect(container.id, container.name, endpoint)
        if not container.running:
            return
        if reply.resolv_conf:
            await _switch_resolv_conf(_bundle_file(manager, container, "resolv.conf"),
                                      reply.resolv_conf_replaced, reply.resolv_conf)
        await _edit_hosts(manager, container,
                          functools.partial(etc_hosts.append_records,
                                            records=list(reply.hosts_added)))


async def disconnect_network(manager: Manager, ref: str, network: str, force: bool) -> None:
    """Disconnect through the network service; a running container's
    /etc/hosts loses just the lines of the addresses it had there, as Docker."""
    container = manager.get(ref)
    async with manager.lock(container.id):
        reply = await manager.peers.disconnect(container.id, network, force)
        if container.running:
            await _edit_hosts(manager, container,
                              functools.partial(etc_hosts.delete_records,
                                                records=list(reply.hosts_removed)))


def _bundle_file(manager: Manager, container: Container, name: str) -> Path:
    return manager.bundle(container).path / name


async def _switch_resolv_conf(path: Path, replaced: str, content: str) -> None:
    if await asyncio.to_thread(path.read_text) == replaced:
        await asyncio.to_thread(path.write_text, content)


async def _edit_hosts(manager: Manager, container: Container,
                      edit: Callable[[str], str]) -> None:
    """Apply `edit` to the container's /etc/hosts as it is now (the user may
    have changed it), writing the same file (the bind mount follows the inode)."""
    path = _bundle_file(manager, container, "hosts")
    current = await asyncio.to_thread(path.read_text)
    edited = edit(current)
    if edited != current:
        await asyncio.to_thread(path.write_text, edited)


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
