"""docker update: merge new resource limits into a container's HostConfig
and apply them to a running container: `runc update` for what it covers,
the memory cgroup's files for swappiness and the OOM killer, the hugetlb
cgroup's limits and the unified (v2) files the cri service passes, prlimit(2)
on the container's processes for ulimits. Every field the update accepts is
stored and applied; devices, device cgroup rules and blkio device lists are
taken at start, so they change only while the container is not running and
are refused while it runs (a device node cannot be added to a running
container's /dev)."""

from __future__ import annotations

import asyncio
import resource

from berth.container.v1 import container_pb2
from services.common.errors import Conflict, InvalidArgument
from services.common.validation import refuse_nul
from services.container import cgroups
from services.container.configs import validate_resources, validate_restart_policy
from services.container.runtime import runc_message
from services.container.spec import rlimits

CPU_PERIOD = 100_000
# Fields a zero leaves unchanged, as Docker's update does.
_MERGED = ("cpu_shares", "memory", "nano_cpus", "cpu_period", "cpu_quota", "cpuset_cpus",
           "cpuset_mems", "memory_reservation", "memory_swap", "blkio_weight",
           "cpu_realtime_period", "cpu_realtime_runtime")
# Fields that a present value replaces, including false and 0.
_PRESENT = ("pids_limit", "memory_swappiness", "oom_kill_disable")
# Lists a non-empty value replaces; set when the container starts, so
# they change only while it is not running.
_START_TIME_LISTS = ("devices", "device_cgroup_rules", "blkio_weight_device",
                     "blkio_device_read_bps", "blkio_device_write_bps",
                     "blkio_device_read_iops", "blkio_device_write_iops")


def merge(host: container_pb2.HostConfig, update: container_pb2.UpdateContainerRequest
          ) -> container_pb2.HostConfig:
    """The container's HostConfig with the update applied (validated)."""
    refuse_nul(update, "update")
    merged = container_pb2.HostConfig()
    merged.CopyFrom(host)
    res, new = merged.resources, update.resources
    for name in _MERGED:
        value = getattr(new, name)
        if value:
            setattr(res, name, value)
    if new.nano_cpus:
        res.cpu_period = res.cpu_quota = 0
    if (new.cpu_period or new.cpu_quota) and not new.nano_cpus:
        res.nano_cpus = 0
    if new.memory and not new.memory_swap:
        if 0 < host.resources.memory_swap < new.memory:
            raise InvalidArgument("Memory limit should be smaller than already set "
                                  "memoryswap limit, update the memoryswap at the same time")
        if host.resources.memory_swap == 0:
            # Docker's default: swap limit twice the memory limit.
            res.memory_swap = new.memory * 2
    for name in _PRESENT:
        if new.HasField(name):
            setattr(res, name, getattr(new, name))
    if new.ulimits:
        del res.ulimits[:]
        res.ulimits.extend(new.ulimits)
    for name in _START_TIME_LISTS:
        if getattr(new, name):
            res.ClearField(name)
            getattr(res, name).extend(getattr(new, name))
    if new.hugepage_limits:
        by_size = {h.page_size: h.limit for h in res.hugepage_limits}
        by_size.update((h.page_size, h.limit) for h in new.hugepage_limits)
        del res.hugepage_limits[:]
        res.hugepage_limits.extend(container_pb2.HugepageLimit(page_size=size, limit=limit)
                                   for size, limit in by_size.items())
    res.unified.update(new.unified)
    validate_resources(res)
    if update.HasField("restart_policy"):
        if host.auto_remove and update.restart_policy.name not in ("", "no"):
            raise InvalidArgument("Restart policy cannot be updated because AutoRemove is "
                                  "enabled for the container")
        merged.restart_policy.CopyFrom(update.restart_policy)
        validate_restart_policy(merged)
    return merged


def runc_update_args(update: container_pb2.Resources, merged: container_pb2.Resources
                     ) -> list[str]:
    """`runc update` flags for the fields the update sets."""
    args: list[str] = []
    if update.memory or update.memory_swap:
        args += ["--memory", str(merged.memory), "--memory-swap", str(merged.memory_swap)]
    if update.memory_reservation:
        args += ["--memory-reservation", str(merged.memory_reservation)]
    if update.cpu_shares:
        args += ["--cpu-share", str(merged.cpu_shares)]
    if update.nano_cpus:
        args += ["--cpu-period", str(CPU_PERIOD),
                 "--cpu-quota", str(merged.nano_cpus * CPU_PERIOD // 1_000_000_000)]
    if update.cpu_period:
        args += ["--cpu-period", str(merged.cpu_period)]
    if update.cpu_quota:
        args += ["--cpu-quota", str(merged.cpu_quota)]
    if update.cpuset_cpus:
        args += ["--cpuset-cpus", merged.cpuset_cpus]
    if update.cpuset_mems:
        args += ["--cpuset-mems", merged.cpuset_mems]
    if update.blkio_weight:
        args += ["--blkio-weight", str(merged.blkio_weight)]
    if update.HasField("pids_limit"):
        args += ["--pids-limit", str(merged.pids_limit if merged.pids_limit > 0 else -1)]
    if update.cpu_realtime_period:
        args += ["--cpu-rt-period", str(merged.cpu_realtime_period)]
    if update.cpu_realtime_runtime:
        args += ["--cpu-rt-runtime", str(merged.cpu_realtime_runtime)]
    return args


def check_running(update: container_pb2.Resources, container_id: str) -> None:
    """Refuse what cannot change while the container runs, before anything changes."""
    if update.devices:
        raise Conflict(f"Cannot update container {container_id}: devices cannot be changed "
                       "while the container is running; stop it first")
    if any(getattr(update, name) for name in _START_TIME_LISTS):
        raise Conflict(f"Cannot update container {container_id}: device cgroup rules and "
                       "blkio device settings cannot be changed while the container is "
                       "running; stop it first")
    if (update.HasField("memory_swappiness") or update.HasField("oom_kill_disable")) \
            and cgroups.is_v2():
        raise InvalidArgument(f"Cannot update container {container_id}: memory swappiness "
                              "and the OOM killer switch need cgroup v1")


def apply_memory_settings(update: container_pb2.Resources, cgroup_path: str) -> None:
    """memory.swappiness and memory.oom_control of a running container (cgroup v1)."""
    directory = cgroups.ROOT / "memory" / cgroup_path.lstrip("/")
    if update.HasField("memory_swappiness") and update.memory_swappiness >= 0:
        (directory / "memory.swappiness").write_text(str(update.memory_swappiness))
    if update.HasField("oom_kill_disable"):
        (directory / "memory.oom_control").write_text("1" if update.oom_kill_disable else "0")


def apply_cgroup_files(update: container_pb2.Resources, cgroup_path: str) -> None:
    """Hugepage limits (where the host has the hugetlb controller) and
    unified files of a running container, which `runc update` leaves alone."""
    if update.hugepage_limits and cgroups.hugetlb_present():
        for limit in update.hugepage_limits:
            cgroups.hugetlb_limit_file(cgroup_path, limit.page_size).write_text(str(limit.limit))
    for key, value in update.unified.items():
        (cgroups.ROOT / cgroup_path.lstrip("/") / key).write_text(value)


def apply_ulimits(ulimits: list[container_pb2.Ulimit], pids: set[int]) -> None:
    """Set the limits on every process of the container, as its spec sets them at start."""
    wanted = {f"RLIMIT_{ulimit.name.upper()}" for ulimit in ulimits}
    for limit in rlimits(ulimits):
        if limit["type"] not in wanted:
            continue
        for pid in pids:
            try:
                resource.prlimit(pid, getattr(resource, limit["type"]),
                                 (limit["soft"], limit["hard"]))
            except ProcessLookupError:
                continue


async def runc_update(binary: str, root: str, container_id: str, args: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        binary, "--root", root, "update", *args, container_id,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        message = runc_message(err.decode(errors="replace"))
        raise InvalidArgument(f"Cannot update container {container_id}: {message}")
