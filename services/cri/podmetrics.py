"""ListMetricDescriptors and ListPodSandboxMetrics: each running pod's
container metrics under cAdvisor's names, so kubelet can take its
/metrics/cadvisor figures from the runtime. They come from the container
service's stats sample and inspect of each container (cgroup CPU, memory,
pids, block IO), the pause container's interfaces for the pod's network, and
the writable layer's file system. Values are whole numbers (CRI's UInt64);
seconds are truncated."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from berth.container.v1 import container_pb2
from k8s.runtime.v1 import api_pb2
from services.cri.containers import Containers, parse_time
from services.cri.peers import Peers
from services.cri.sandboxes import Sandboxes
from services.cri.stats import sample_of
from services.cri.store import ContainerRecord, Sandbox

LABELS = ("container", "id", "image", "namespace", "pod")
NANOS = 1_000_000_000
COUNTER, GAUGE = api_pb2.COUNTER, api_pb2.GAUGE


@dataclass
class Observed:
    """What one container's metrics are computed from."""

    record: ContainerRecord
    sample: container_pb2.ContainerStats
    inspect: container_pb2.ContainerInspect
    filesystem: os.statvfs_result | None

    def memory(self, *keys: str) -> int:
        """The first of `keys` in memory.stat (v1 hierarchical, v1, v2 names)."""
        figures = self.sample.memory_stats.stats
        return next((figures[key] for key in keys if key in figures), 0)


Values = list[tuple[tuple[str, ...], int]]     # (extra label values, value)
Getter = Callable[[Observed], Values]


def _one(value: Callable[[Observed], int]) -> Getter:
    return lambda seen: [((), int(value(seen)))]


def _descriptor_fds(seen: Observed, sockets_only: bool) -> int:
    try:
        targets = [os.readlink(entry) for entry in
                   Path(f"/proc/{seen.inspect.state.pid}/fd").iterdir()]
    except OSError:
        return 0
    return sum(1 for t in targets if t.startswith("socket:")) if sockets_only else len(targets)


def _blkio(seen: Observed, op: str, serviced: bool) -> Values:
    entries = (seen.sample.io_serviced_recursive if serviced
               else seen.sample.io_service_bytes_recursive)
    return [((f"{e.major}:{e.minor}",), e.value) for e in entries if e.op.lower() == op]


def _fs(seen: Observed, value: Callable[[os.statvfs_result], int]) -> Values:
    device = seen.inspect.graph_driver_data.get("UpperDir", "")
    return [((device,), value(seen.filesystem))] if seen.filesystem else []


def _resources(seen: Observed) -> api_pb2.LinuxContainerResources:
    return seen.record.config.linux.resources


# name -> (help, type, extra label keys, getter)
CONTAINER_METRICS: dict[str, tuple[str, int, tuple[str, ...], Getter]] = {
    "container_cpu_usage_seconds_total": (
        "Cumulative cpu time consumed in seconds.", COUNTER, (),
        _one(lambda s: s.sample.cpu_stats.cpu_usage.total_usage // NANOS)),
    "container_cpu_user_seconds_total": (
        "Cumulative user cpu time consumed in seconds.", COUNTER, (),
        _one(lambda s: s.sample.cpu_stats.cpu_usage.usage_in_usermode // NANOS)),
    "container_cpu_system_seconds_total": (
        "Cumulative system cpu time consumed in seconds.", COUNTER, (),
        _one(lambda s: s.sample.cpu_stats.cpu_usage.usage_in_kernelmode // NANOS)),
    "container_cpu_cfs_periods_total": (
        "Number of elapsed enforcement period intervals.", COUNTER, (),
        _one(lambda s: s.sample.cpu_stats.throttling_periods)),
    "container_cpu_cfs_throttled_periods_total": (
        "Number of throttled period intervals.", COUNTER, (),
        _one(lambda s: s.sample.cpu_stats.throttled_periods)),
    "container_cpu_cfs_throttled_seconds_total": (
        "Total time duration the container has been throttled.", COUNTER, (),
        _one(lambda s: s.sample.cpu_stats.throttled_time // NANOS)),
    "container_memory_usage_bytes": (
        "Current memory usage in bytes, including all memory regardless of when it was "
        "accessed.", GAUGE, (), _one(lambda s: s.sample.memory_stats.usage)),
    "container_memory_max_usage_bytes": (
        "Maximum memory usage recorded in bytes.", GAUGE, (),
        _one(lambda s: s.sample.memory_stats.max_usage)),
    "container_memory_working_set_bytes": (
        "Current working set in bytes.", GAUGE, (),
        _one(lambda s: max(s.sample.memory_stats.usage
                           - s.memory("total_inactive_file", "inactive_file"), 0))),
    "container_memory_cache": (
        "Number of bytes of page cache memory.", GAUGE, (),
        _one(lambda s: s.memory("total_cache", "cache", "file"))),
    "container_memory_rss": (
        "Size of RSS in bytes.", GAUGE, (), _one(lambda s: s.memory("total_rss", "rss", "anon"))),
    "container_memory_mapped_file": (
        "Size of memory mapped files in bytes.", GAUGE, (),
        _one(lambda s: s.memory("total_mapped_file", "mapped_file", "file_mapped"))),
    "container_memory_swap": (
        "Container swap usage in bytes.", GAUGE, (),
        _one(lambda s: s.memory("total_swap", "swap"))),
    "container_memory_kernel_usage": (
        "Size of kernel memory allocated in bytes.", GAUGE, (),
        _one(lambda s: s.memory("kernel", "kernel_stack"))),
    "container_memory_failcnt": (
        "Number of memory usage hits limits.", COUNTER, (),
        _one(lambda s: s.sample.memory_stats.failcnt)),
    "container_memory_failures_total": (
        "Cumulative count of memory allocation failures.", COUNTER, ("failure_type", "scope"),
        lambda s: [(("pgfault", "container"), s.memory("pgfault")),
                   (("pgmajfault", "container"), s.memory("pgmajfault")),
                   (("pgfault", "hierarchy"), s.memory("total_pgfault", "pgfault")),
                   (("pgmajfault", "hierarchy"), s.memory("total_pgmajfault", "pgmajfault"))]),
    "container_oom_events_total": (
        "Count of out of memory events observed for the container.", COUNTER, (),
        _one(lambda s: int(s.inspect.state.oom_killed))),
    "container_processes": (
        "Number of processes running inside the container.", GAUGE, (),
        _one(lambda s: s.sample.num_procs or s.sample.pids_current)),
    "container_threads": (
        "Number of threads running inside the container.", GAUGE, (),
        _one(lambda s: s.sample.pids_current)),
    "container_threads_max": (
        "Maximum number of threads allowed inside the container, 0 for unlimited.", GAUGE, (),
        _one(lambda s: s.sample.pids_limit)),
    "container_file_descriptors": (
        "Number of open file descriptors for the container.", GAUGE, (),
        _one(lambda s: _descriptor_fds(s, sockets_only=False))),
    "container_sockets": (
        "Number of open sockets for the container.", GAUGE, (),
        _one(lambda s: _descriptor_fds(s, sockets_only=True))),
    "container_fs_usage_bytes": (
        "Number of bytes that are consumed by the container on this filesystem.", GAUGE,
        ("device",), lambda s: _fs(s, lambda _: s.inspect.size_rw)),
    "container_fs_limit_bytes": (
        "Number of bytes that can be consumed by the container on this filesystem.", GAUGE,
        ("device",), lambda s: _fs(s, lambda v: v.f_blocks * v.f_frsize)),
    "container_fs_inodes_total": (
        "Number of Inodes.", GAUGE, ("device",), lambda s: _fs(s, lambda v: v.f_files)),
    "container_fs_inodes_free": (
        "Number of available Inodes.", GAUGE, ("device",),
        lambda s: _fs(s, lambda v: v.f_ffree)),
    "container_fs_reads_bytes_total": (
        "Cumulative count of bytes read.", COUNTER, ("device",),
        lambda s: _blkio(s, "read", serviced=False)),
    "container_fs_writes_bytes_total": (
        "Cumulative count of bytes written.", COUNTER, ("device",),
        lambda s: _blkio(s, "write", serviced=False)),
    "container_fs_reads_total": (
        "Cumulative count of reads completed.", COUNTER, ("device",),
        lambda s: _blkio(s, "read", serviced=True)),
    "container_fs_writes_total": (
        "Cumulative count of writes completed.", COUNTER, ("device",),
        lambda s: _blkio(s, "write", serviced=True)),
    "container_blkio_device_usage_total": (
        "Blkio device bytes usage.", COUNTER, ("device", "major", "minor", "operation"),
        lambda s: [((f"{e.major}:{e.minor}", str(e.major), str(e.minor), e.op), e.value)
                   for e in s.sample.io_service_bytes_recursive]),
    "container_last_seen": (
        "Last time a container was seen by the exporter.", GAUGE, (),
        _one(lambda s: int(time.time()))),
    "container_start_time_seconds": (
        "Start time of the container since unix epoch in seconds.", GAUGE, (),
        _one(lambda s: parse_time(s.inspect.state.started_at) // NANOS)),
    "container_spec_cpu_period": (
        "CPU period of the container.", GAUGE, (), _one(lambda s: _resources(s).cpu_period)),
    "container_spec_cpu_quota": (
        "CPU quota of the container.", GAUGE, (), _one(lambda s: max(_resources(s).cpu_quota, 0))),
    "container_spec_cpu_shares": (
        "CPU share of the container.", GAUGE, (), _one(lambda s: _resources(s).cpu_shares)),
    "container_spec_memory_limit_bytes": (
        "Memory limit for the container.", GAUGE, (),
        _one(lambda s: _resources(s).memory_limit_in_bytes)),
    "container_spec_memory_swap_limit_bytes": (
        "Memory swap limit for the container.", GAUGE, (),
        _one(lambda s: _resources(s).memory_swap_limit_in_bytes)),
}

# The pod's interfaces, from its pause container: name -> (help, counter field).
NETWORK_METRICS = {
    "container_network_receive_bytes_total": ("Cumulative count of bytes received.",
                                              "rx_bytes"),
    "container_network_receive_packets_total": ("Cumulative count of packets received.",
                                                "rx_packets"),
    "container_network_receive_errors_total": (
        "Cumulative count of errors encountered while receiving.", "rx_errors"),
    "container_network_receive_packets_dropped_total": (
        "Cumulative count of packets dropped while receiving.", "rx_dropped"),
    "container_network_transmit_bytes_total": ("Cumulative count of bytes transmitted.",
                                               "tx_bytes"),
    "container_network_transmit_packets_total": ("Cumulative count of packets transmitted.",
                                                 "tx_packets"),
    "container_network_transmit_errors_total": (
        "Cumulative count of errors encountered while transmitting.", "tx_errors"),
    "container_network_transmit_packets_dropped_total": (
        "Cumulative count of packets dropped while transmitting.", "tx_dropped"),
}


def descriptors() -> list[api_pb2.MetricDescriptor]:
    found = [api_pb2.MetricDescriptor(name=name, help=help_text,
                                      label_keys=[*LABELS, *extra])
             for name, (help_text, _, extra, _) in CONTAINER_METRICS.items()]
    found += [api_pb2.MetricDescriptor(name=name, help=help_text,
                                       label_keys=[*LABELS, "interface"])
              for name, (help_text, _) in NETWORK_METRICS.items()]
    return found


class PodMetrics:
    def __init__(self, peers: Peers, sandboxes: Sandboxes, containers: Containers) -> None:
        self._peers = peers
        self._sandboxes = sandboxes
        self._containers = containers

    async def list(self) -> list[api_pb2.PodSandboxMetrics]:
        ready = [s for s in await self._sandboxes.list(None)
                 if s.state == api_pb2.SANDBOX_READY]
        return [await self._pod(self._sandboxes.get(s.id)) for s in ready]

    async def _pod(self, sandbox: Sandbox) -> api_pb2.PodSandboxMetrics:
        now = time.time_ns()
        metadata = sandbox.config.metadata
        result = api_pb2.PodSandboxMetrics(pod_sandbox_id=sandbox.id)
        pause = await sample_of(self._peers, sandbox.pause_id)
        if pause is not None:
            pod_labels = ["POD", sandbox.pause_id, "", metadata.namespace, metadata.name]
            for interface, counters in sorted(pause.networks.items()):
                for name, (_, field) in NETWORK_METRICS.items():
                    result.metrics.append(_metric(name, COUNTER, now,
                                                  [*pod_labels, interface],
                                                  getattr(counters, field)))
        running = [c for c in await self._containers.list(api_pb2.ContainerFilter(
            pod_sandbox_id=sandbox.id)) if c.state == api_pb2.CONTAINER_RUNNING]
        for container in running:
            seen = await self._observe(self._containers.get(container.id))
            if seen is not None:
                result.container_metrics.append(self._of(seen, sandbox, now))
        return result

    async def _observe(self, record: ContainerRecord) -> Observed | None:
        sample = await sample_of(self._peers, record.id)
        if sample is None:
            return None
        inspect = await self._peers.containers.Inspect(
            container_pb2.InspectContainerRequest(id=record.id, size=True))
        upper = inspect.graph_driver_data.get("UpperDir", "")
        try:
            filesystem = os.statvfs(upper) if upper else None
        except OSError:
            filesystem = None
        return Observed(record, sample, inspect, filesystem)

    @staticmethod
    def _of(seen: Observed, sandbox: Sandbox, now: int) -> api_pb2.ContainerMetrics:
        record, metadata = seen.record, sandbox.config.metadata
        labels = [record.config.metadata.name, record.id, record.config.image.image,
                  metadata.namespace, metadata.name]
        result = api_pb2.ContainerMetrics(container_id=record.id)
        for name, (_, kind, _, values) in CONTAINER_METRICS.items():
            for extra, value in values(seen):
                result.metrics.append(_metric(name, kind, now, [*labels, *extra], value))
        return result


def _metric(name: str, kind: int, now: int, labels: list[str],
            value: int) -> api_pb2.Metric:
    metric = api_pb2.Metric(name=name, timestamp=now, metric_type=kind, label_values=labels)
    metric.value.value = max(int(value), 0)
    return metric
