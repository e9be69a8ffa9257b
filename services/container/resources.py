"""A running container's processes and resources, read from and set on
its cgroup: docker top, docker stats and docker update."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from berth.container.v1 import container_pb2
from services.common.config import Config
from services.common.errors import Conflict, InvalidArgument
from services.container import configs, stats, top, update
from services.container.cgroups import cgroups_path
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.store import Container

STATS_INTERVAL = 1.0


class Resources:
    def __init__(self, config: Config, manager: Manager, events: ContainerEvents) -> None:
        self._instance_prefix = config.instance_prefix
        self._manager = manager
        self._events = events
        self._runtime = manager.runtime

    def _running(self, ref: str) -> Container:
        container = self._manager.get(ref)
        if container.state.status not in ("running", "paused") or not container.state.pid:
            raise Conflict(f"Container {container.id} is not running")
        return container

    def _cgroup(self, container: Container) -> str:
        return cgroups_path(self._instance_prefix, container.id,
                            container.host_config.resources.cgroup_parent)

    async def top(self, ref: str, ps_args: str) -> top.ProcessTable:
        container = self._running(ref)
        table = await top.top(stats.cgroup_pids(self._cgroup(container)), ps_args)
        self._events.publish("top", container)
        return table

    async def stats(self, ref: str, stream: bool, one_shot: bool
                    ) -> AsyncIterator[dict[str, Any]]:
        container = self._manager.get(ref)
        identity = {"name": "/" + container.name, "id": container.id}
        if not container.running or not container.state.pid:
            yield {**identity, "read": "", "preread": ""}
            return
        cgroup, pid = self._cgroup(container), container.state.pid
        previous = await asyncio.to_thread(stats.sample, cgroup, pid)
        if one_shot and not stream:
            yield {**previous, **identity}
            return
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            if not container.running:
                return
            current = await asyncio.to_thread(stats.sample, cgroup, pid)
            yield {**current, **identity, "preread": previous["read"],
                   "precpu_stats": previous["cpu_stats"]}
            if not stream:
                return
            previous = current

    async def update(self, request: container_pb2.UpdateContainerRequest) -> list[str]:
        container = self._manager.get(request.id)
        # As dockerd: what the kernel lacks is dropped from the update, with a warning.
        wanted = container_pb2.UpdateContainerRequest()
        wanted.CopyFrom(request)
        warnings = configs.discard_unsupported_blkio(wanted.resources)
        merged = update.merge(container.host_config, wanted)
        args = update.runc_update_args(wanted.resources, merged.resources)
        if container.running:
            update.check_running(wanted.resources, container.id)
            if args:
                await update.runc_update(self._runtime.binary, str(self._runtime.root),
                                         container.id, args)
            await asyncio.to_thread(self._apply_outside_runc, container, wanted.resources)
        container.host_config.CopyFrom(merged)
        self._manager.save_host_config(container)
        self._events.publish("update", container)
        return warnings

    def _apply_outside_runc(self, container: Container, resources: container_pb2.Resources
                            ) -> None:
        cgroup = self._cgroup(container)
        try:
            update.apply_memory_settings(resources, cgroup)
            update.apply_cgroup_files(resources, cgroup)
            if resources.ulimits:
                update.apply_ulimits(list(resources.ulimits), stats.cgroup_pids(cgroup))
        except OSError as exc:
            raise InvalidArgument(f"Cannot update container {container.id}: {exc}") from exc
