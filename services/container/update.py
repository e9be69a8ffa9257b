"""docker update: merge new resource limits into a container's HostConfig
and apply them to a running container with `runc update`."""

from __future__ import annotations

import asyncio

from berth.container.v1 import container_pb2
from services.common.errors import InvalidArgument
from services.container.configs import validate_resources, validate_restart_policy
from services.container.runtime import runc_message

CPU_PERIOD = 100_000
# Fields a zero leaves unchanged, as Docker's update does.
_MERGED = ("cpu_shares", "memory", "nano_cpus", "cpu_period", "cpu_quota", "cpuset_cpus",
           "cpuset_mems", "memory_reservation", "memory_swap", "blkio_weight")


def merge(host: container_pb2.HostConfig, update: container_pb2.UpdateContainerRequest
          ) -> container_pb2.HostConfig:
    """The container's HostConfig with the update applied (validated)."""
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
    if new.HasField("pids_limit"):
        res.pids_limit = new.pids_limit
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
    return args


async def runc_update(binary: str, root: str, container_id: str, args: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        binary, "--root", root, "update", *args, container_id,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        message = runc_message(err.decode(errors="replace"))
        raise InvalidArgument(f"Cannot update container {container_id}: {message}")
