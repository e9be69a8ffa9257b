"""Prometheus metrics of the cri service (beside the gRPC server metrics
every service has): its objects, counted at scrape time, and how long a pod
takes to come up."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.cri.store import NOT_READY, READY

RUN_POD_SECONDS = Histogram(
    "berth_cri_run_pod_sandbox_seconds",
    "Time to run a pod sandbox (pause image, network, pause container).",
    buckets=(.1, .25, .5, 1, 2.5, 5, 10, 30, 60))


class CriCollector(Collector):
    """`snapshot` returns the states of the sandboxes and the number of containers."""

    def __init__(self, snapshot: Callable[[], tuple[list[str], int]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable:
        states, containers = self._snapshot()
        sandboxes = GaugeMetricFamily("berth_cri_pod_sandboxes", "Pod sandboxes by state.",
                                      labels=["state"])
        for state in (READY, NOT_READY):
            sandboxes.add_metric([state], states.count(state))
        yield sandboxes
        yield GaugeMetricFamily("berth_cri_containers", "CRI containers.", value=containers)
