"""CRI stats of containers and pods, from the container service's samples
(cgroup CPU and memory, network counters of the pod's interfaces)."""

from __future__ import annotations

import time

from berth.container.v1 import container_pb2
from k8s.runtime.v1 import api_pb2
from services.common.errors import Conflict, NotFound
from services.cri.containers import Containers
from services.cri.peers import Peers
from services.cri.sandboxes import Sandboxes
from services.cri.store import ContainerRecord, Sandbox

POD_INTERFACE = "eth0"


async def sample_of(peers: Peers, cid: str) -> container_pb2.ContainerStats | None:
    """One sample of a running container; None when it is not running."""
    try:
        async for sample in peers.containers.Stats(
                container_pb2.StatsRequest(id=cid, stream=False, one_shot=True)):
            return sample
    except (NotFound, Conflict):
        return None
    return None


def _fill(cpu: api_pb2.CpuUsage, memory: api_pb2.MemoryUsage,
          sample: container_pb2.ContainerStats, now: int) -> None:
    cpu.timestamp = memory.timestamp = now
    cpu.usage_core_nano_seconds.value = sample.cpu_stats.cpu_usage.total_usage
    figures = sample.memory_stats.stats
    inactive = figures.get("total_inactive_file", figures.get("inactive_file", 0))
    usage = sample.memory_stats.usage
    memory.working_set_bytes.value = max(usage - inactive, 0)
    memory.usage_bytes.value = usage
    memory.rss_bytes.value = figures.get("total_rss", figures.get("rss", 0))


class Stats:
    def __init__(self, peers: Peers, sandboxes: Sandboxes, containers: Containers) -> None:
        self._peers = peers
        self._sandboxes = sandboxes
        self._containers = containers

    async def container(self, cid: str) -> api_pb2.ContainerStats:
        return await self._of(self._containers.get(cid))

    async def _of(self, record: ContainerRecord) -> api_pb2.ContainerStats:
        result = api_pb2.ContainerStats(attributes=api_pb2.ContainerAttributes(
            id=record.id, metadata=record.config.metadata, labels=record.config.labels,
            annotations=record.config.annotations))
        now = time.time_ns()
        sample = await sample_of(self._peers, record.id)
        if sample is not None:
            _fill(result.cpu, result.memory, sample, now)
        inspect = await self._peers.containers.Inspect(
            container_pb2.InspectContainerRequest(id=record.id, size=True))
        result.writable_layer.timestamp = now
        result.writable_layer.fs_id.mountpoint = inspect.graph_driver_data.get("UpperDir", "")
        result.writable_layer.used_bytes.value = inspect.size_rw
        return result

    async def containers(self, wanted: api_pb2.ContainerStatsFilter | None
                         ) -> list[api_pb2.ContainerStats]:
        filter_ = api_pb2.ContainerFilter(
            id=wanted.id, pod_sandbox_id=wanted.pod_sandbox_id,
            label_selector=wanted.label_selector) if wanted is not None else None
        running = [c.id for c in await self._containers.list(filter_)
                   if c.state == api_pb2.CONTAINER_RUNNING]
        return [await self.container(cid) for cid in running]

    async def pod(self, sandbox_id: str) -> api_pb2.PodSandboxStats:
        return await self._pod(self._sandboxes.get(sandbox_id))

    async def _pod(self, sandbox: Sandbox) -> api_pb2.PodSandboxStats:
        config = sandbox.config
        result = api_pb2.PodSandboxStats(attributes=api_pb2.PodSandboxAttributes(
            id=sandbox.id, metadata=config.metadata, labels=config.labels,
            annotations=config.annotations))
        linux = result.linux
        now = time.time_ns()
        members = await self.containers(api_pb2.ContainerStatsFilter(pod_sandbox_id=sandbox.id))
        linux.containers.extend(members)
        pause = await sample_of(self._peers, sandbox.pause_id)
        if pause is not None:
            _fill(linux.cpu, linux.memory, pause, now)
            self._network(linux.network, pause, now)
        for member in members:
            linux.cpu.usage_core_nano_seconds.value += member.cpu.usage_core_nano_seconds.value
            linux.memory.working_set_bytes.value += member.memory.working_set_bytes.value
            linux.memory.usage_bytes.value += member.memory.usage_bytes.value
        linux.cpu.timestamp = linux.memory.timestamp = now
        return result

    @staticmethod
    def _network(usage: api_pb2.NetworkUsage, sample: container_pb2.ContainerStats,
                 now: int) -> None:
        usage.timestamp = now
        for name, counters in sorted(sample.networks.items()):
            interface = api_pb2.NetworkInterfaceUsage(name=name)
            interface.rx_bytes.value, interface.tx_bytes.value = (counters.rx_bytes,
                                                                  counters.tx_bytes)
            interface.rx_errors.value, interface.tx_errors.value = (counters.rx_errors,
                                                                    counters.tx_errors)
            usage.interfaces.append(interface)
            if name == POD_INTERFACE:
                usage.default_interface.CopyFrom(interface)

    async def pods(self, wanted: api_pb2.PodSandboxStatsFilter | None
                   ) -> list[api_pb2.PodSandboxStats]:
        filter_ = api_pb2.PodSandboxFilter(
            id=wanted.id, label_selector=wanted.label_selector) if wanted is not None else None
        ready = [s.id for s in await self._sandboxes.list(filter_)
                 if s.state == api_pb2.SANDBOX_READY]
        return [await self.pod(sandbox_id) for sandbox_id in ready]
