"""docker stats: one sample of a container's cgroup counters and network
interfaces, shaped like Docker's stats JSON (cgroup v1 and v2)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from services.container import cgroups
from services.container.archive import go_time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NANOS = 1_000_000_000
UNLIMITED = 1 << 62          # cgroup v1 prints "no limit" as a value above this


def now_rfc3339() -> str:
    """Now, as Go marshals a time (RFC 3339 with nanoseconds), like Docker's."""
    return go_time(time.time_ns())


def _number(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def _key_values(text: str | None) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def system_cpu_nanos(proc_stat: str | None = None) -> int:
    """Host CPU time in ns, as Docker's system_cpu_usage (from /proc/stat)."""
    text = proc_stat if proc_stat is not None else Path("/proc/stat").read_text()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            return sum(int(v) for v in fields[1:8]) * NANOS // CLOCK_TICKS
    return 0


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cpu_v1(path: str) -> dict[str, Any]:
    percpu = [int(v) for v in (cgroups.read_value(path, ("cpuacct", "cpuacct.usage_percpu"))
                               or "").split()]
    ticks = _key_values(cgroups.read_value(path, ("cpuacct", "cpuacct.stat")))
    throttling = _key_values(cgroups.read_value(path, ("cpu", "cpu.stat")))
    return {
        "cpu_usage": {
            "total_usage": _number(cgroups.read_value(path, ("cpuacct", "cpuacct.usage"))),
            "percpu_usage": percpu,
            "usage_in_usermode": ticks.get("user", 0) * NANOS // CLOCK_TICKS,
            "usage_in_kernelmode": ticks.get("system", 0) * NANOS // CLOCK_TICKS},
        "throttling_periods": throttling.get("nr_periods", 0),
        "throttled_periods": throttling.get("nr_throttled", 0),
        "throttled_time": throttling.get("throttled_time", 0),
        "online_cpus": len(percpu) or os.cpu_count() or 1,
    }


def _cpu_v2(path: str) -> dict[str, Any]:
    values = _key_values(cgroups.read_value(path, ("", ""), ("cpu.stat", "")))
    return {
        "cpu_usage": {"total_usage": values.get("usage_usec", 0) * 1000,
                      "usage_in_usermode": values.get("user_usec", 0) * 1000,
                      "usage_in_kernelmode": values.get("system_usec", 0) * 1000},
        "throttling_periods": values.get("nr_periods", 0),
        "throttled_periods": values.get("nr_throttled", 0),
        "throttled_time": values.get("throttled_usec", 0) * 1000,
        "online_cpus": os.cpu_count() or 1,
    }


def _memory(path: str) -> dict[str, Any]:
    if cgroups.is_v2():
        usage = _number(cgroups.read_value(path, ("", ""), ("memory.current", "")))
        limit_text = cgroups.read_value(path, ("", ""), ("memory.max", ""))
        limit = UNLIMITED if limit_text in (None, "max") else _number(limit_text)
        stats = _key_values(cgroups.read_value(path, ("", ""), ("memory.stat", "")))
        max_usage = failcnt = 0
    else:
        usage = _number(cgroups.read_value(path, ("memory", "memory.usage_in_bytes")))
        max_usage = _number(cgroups.read_value(path, ("memory", "memory.max_usage_in_bytes")))
        limit = _number(cgroups.read_value(path, ("memory", "memory.limit_in_bytes")))
        failcnt = _number(cgroups.read_value(path, ("memory", "memory.failcnt")))
        stats = _key_values(cgroups.read_value(path, ("memory", "memory.stat")))
    host = host_memory_bytes()
    return {"usage": usage, "max_usage": max_usage, "failcnt": failcnt, "stats": stats,
            # Without a limit Docker reports the host's memory.
            "limit": host if limit == 0 or limit > host else limit}


def _blkio_v1(path: str, name: str) -> list[dict[str, Any]]:
    entries = []
    for line in (cgroups.read_value(path, ("blkio", name)) or "").splitlines():
        fields = line.split()
        if len(fields) == 3 and ":" in fields[0]:
            major, minor = fields[0].split(":")
            entries.append({"major": int(major), "minor": int(minor), "op": fields[1],
                            "value": int(fields[2])})
    return entries


def _blkio_v2(path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    service_bytes, serviced = [], []
    for line in (cgroups.read_value(path, ("", ""), ("io.stat", "")) or "").splitlines():
        device, *pairs = line.split()
        major, minor = (int(n) for n in device.split(":"))
        values = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        for op, bytes_key, ios_key in (("read", "rbytes", "rios"), ("write", "wbytes", "wios")):
            service_bytes.append({"major": major, "minor": minor, "op": op,
                                  "value": int(values.get(bytes_key, 0))})
            serviced.append({"major": major, "minor": minor, "op": op,
                             "value": int(values.get(ios_key, 0))})
    return service_bytes, serviced


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/<pid>/net/dev as Docker's networks map (loopback left out)."""
    networks = {}
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(":")
        name = name.strip()
        values = [int(v) for v in counters.split()]
        if name == "lo" or len(values) < 12:
            continue
        networks[name] = {
            "rx_bytes": values[0], "rx_packets": values[1], "rx_errors": values[2],
            "rx_dropped": values[3], "tx_bytes": values[8], "tx_packets": values[9],
            "tx_errors": values[10], "tx_dropped": values[11]}
    return networks


def sample(cgroup_path: str, pid: int) -> dict[str, Any]:
    """One stats sample (fields of the ContainerStats message)."""
    v2 = cgroups.is_v2()
    cpu = _cpu_v2(cgroup_path) if v2 else _cpu_v1(cgroup_path)
    cpu["system_cpu_usage"] = system_cpu_nanos()
    pids_max = cgroups.read_value(cgroup_path, ("pids", "pids.max"), ("pids.max", ""))
    if v2:
        service_bytes, serviced = _blkio_v2(cgroup_path)
    else:
        service_bytes = _blkio_v1(cgroup_path, "blkio.throttle.io_service_bytes_recursive")
        serviced = _blkio_v1(cgroup_path, "blkio.throttle.io_serviced_recursive")
    try:
        networks = parse_net_dev(Path(f"/proc/{pid}/net/dev").read_text())
    except OSError:
        networks = {}
    return {
        "read": now_rfc3339(),
        "cpu_stats": cpu,
        "memory_stats": _memory(cgroup_path),
        "pids_current": _number(cgroups.read_value(cgroup_path, ("pids", "pids.current"),
                                                   ("pids.current", ""))),
        "pids_limit": 0 if pids_max in (None, "max") else _number(pids_max),
        "io_service_bytes_recursive": service_bytes,
        "io_serviced_recursive": serviced,
        "networks": networks,
    }


def cgroup_pids(cgroup_path: str) -> set[int]:
    """Every process in the container's cgroup (execs join it too)."""
    text = cgroups.read_value(cgroup_path, ("pids", "cgroup.procs"), ("cgroup.procs", ""))
    return {int(pid) for pid in (text or "").split()}

