"""Docker's stats JSON and docker cp's path-stat header from the container
service's protos."""

from __future__ import annotations

import base64
import json
from typing import Any

from berth.container.v1 import container_pb2 as pb


def path_stat_header(stat: pb.PathStat) -> str:
    body = {"name": stat.name, "size": stat.size, "mode": stat.mode, "mtime": stat.mtime,
            "linkTarget": stat.link_target}
    return base64.b64encode(json.dumps(body).encode()).decode()


def _cpu_json(cpu: pb.CpuStats, with_percpu: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {"total_usage": cpu.cpu_usage.total_usage,
                             "usage_in_kernelmode": cpu.cpu_usage.usage_in_kernelmode,
                             "usage_in_usermode": cpu.cpu_usage.usage_in_usermode}
    if with_percpu and cpu.cpu_usage.percpu_usage:
        usage["percpu_usage"] = list(cpu.cpu_usage.percpu_usage)
    out: dict[str, Any] = {"cpu_usage": usage,
                           "throttling_data": {"periods": cpu.throttling_periods,
                                               "throttled_periods": cpu.throttled_periods,
                                               "throttled_time": cpu.throttled_time}}
    if cpu.system_cpu_usage:
        out["system_cpu_usage"] = cpu.system_cpu_usage
    if cpu.online_cpus:
        out["online_cpus"] = cpu.online_cpus
    return out


def _blkio_json(entries: Any, sampled: bool) -> list[dict[str, Any]] | None:
    """Docker's lists: empty for a running container, null for a stopped one."""
    if not sampled:
        return None
    return [{"major": e.major, "minor": e.minor, "op": e.op, "value": e.value} for e in entries]


def stats_json(stats: pb.ContainerStats) -> dict[str, Any]:
    """Docker's stats JSON (types.StatsJSON)."""
    sampled = bool(stats.read)
    memory: dict[str, Any] = {}
    if stats.memory_stats.usage or stats.memory_stats.limit:
        m = stats.memory_stats
        memory = {"usage": m.usage, "stats": dict(m.stats), "limit": m.limit}
        if m.max_usage:
            memory["max_usage"] = m.max_usage
        if m.failcnt:
            memory["failcnt"] = m.failcnt
    pids: dict[str, Any] = {}
    if stats.pids_current:
        pids["current"] = stats.pids_current
    if stats.pids_limit:
        pids["limit"] = stats.pids_limit
    out: dict[str, Any] = {
        "name": stats.name, "id": stats.id,
        "read": stats.read or "0001-01-01T00:00:00Z",
        "preread": stats.preread or "0001-01-01T00:00:00Z",
        "pids_stats": pids,
        "blkio_stats": {
            "io_service_bytes_recursive": _blkio_json(stats.io_service_bytes_recursive,
                                                      sampled),
            "io_serviced_recursive": _blkio_json(stats.io_serviced_recursive, sampled),
            **{name: _blkio_json([], sampled) for name in (
                "io_queue_recursive", "io_service_time_recursive", "io_wait_time_recursive",
                "io_merged_recursive", "io_time_recursive", "sectors_recursive")}},
        "num_procs": stats.num_procs,
        "storage_stats": {},
        "cpu_stats": _cpu_json(stats.cpu_stats, True),
        "precpu_stats": _cpu_json(stats.precpu_stats, True),
        "memory_stats": memory,
    }
    if stats.networks:
        out["networks"] = {name: {
            "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets, "rx_errors": n.rx_errors,
            "rx_dropped": n.rx_dropped, "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
            "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped}
            for name, n in stats.networks.items()}
    return out
