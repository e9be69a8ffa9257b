"""Prometheus metrics of the container service. Per-container cgroup
figures are read at scrape time by a collector, never polled."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.container import cgroups

START_SECONDS = Histogram(
    "berth_container_start_seconds", "Time to start a container (mount, sandbox, runc).",
    buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30))

_STATES = ("created", "running", "paused", "restarting", "exited", "dead")


class ContainerCollector(Collector):
    """`snapshot` returns (id, name, state, cgroups path) of every container."""

    def __init__(self, snapshot: Callable[[], list[tuple[str, str, str, str]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable:
        rows = self._snapshot()
        by_state = GaugeMetricFamily("berth_container_containers",
                                     "Containers by state.", labels=["state"])
        for state in _STATES:
            by_state.add_metric([state], sum(1 for row in rows if row[2] == state))
        yield by_state
        cpu = CounterMetricFamily("berth_container_cpu_seconds",
                                  "CPU time used by the container's cgroup.",
                                  labels=["id", "name"])
        memory = GaugeMetricFamily("berth_container_memory_bytes",
                                   "Memory used by the container's cgroup.",
                                   labels=["id", "name"])
        pids = GaugeMetricFamily("berth_container_pids", "Processes in the container.",
                                 labels=["id", "name"])
        for cid, name, state, path in rows:
            if state not in ("running", "paused"):
                continue
            labels = [cid, name]
            if (value := cgroups.cpu_seconds(path)) is not None:
                cpu.add_metric(labels, value)
            if (value := cgroups.memory_bytes(path)) is not None:
                memory.add_metric(labels, value)
            if (value := cgroups.pids(path)) is not None:
                pids.add_metric(labels, value)
        yield from (cpu, memory, pids)
