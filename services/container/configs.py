"""Create-time rules: the image's config merged under the user's, and
Docker's checks of the host config (with Docker's messages)."""

from __future__ import annotations

import os

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from services.common.errors import InvalidArgument
from services.common.validation import refuse_nul
from services.container import cgroups, spec
from services.container.runtime import signal_number

_MIN_MEMORY = 6 * 1024 * 1024
_RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
# Each blkio setting, the v1 file that shows the kernel has it, and dockerd's
# warning when it drops the setting on a kernel without it.
_BLKIO_SETTINGS = (
    ("blkio_weight", "blkio.weight",
     "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
     "Weight discarded."),
    ("blkio_weight_device", "blkio.weight_device",
     "Your kernel does not support Block I/O weight_device or the cgroup is not mounted. "
     "Weight-device discarded."),
    ("blkio_device_read_bps", "blkio.throttle.read_bps_device",
     "Your kernel does not support BPS Block I/O read limit or the cgroup is not mounted. "
     "Block I/O BPS read limit discarded."),
    ("blkio_device_write_bps", "blkio.throttle.write_bps_device",
     "Your kernel does not support BPS Block I/O write limit or the cgroup is not mounted. "
     "Block I/O BPS write limit discarded."),
    ("blkio_device_read_iops", "blkio.throttle.read_iops_device",
     "Your kernel does not support IOPS Block read limit or the cgroup is not mounted. "
     "Block I/O IOPS read limit discarded."),
    ("blkio_device_write_iops", "blkio.throttle.write_iops_device",
     "Your kernel does not support IOPS Block write limit or the cgroup is not mounted. "
     "Block I/O IOPS write limit discarded."),
)
_STORAGE_QUOTA_ERROR = ("--storage-opt is supported only for overlay over xfs with 'pquota' "
                        "mount option")


def merge_image_config(config: container_pb2.ContainerConfig,
                       image: image_pb2.ImageConfig) -> None:
    """Fill what the user left unset from the image, as Docker's merge does."""
    if not config.user:
        config.user = image.user
    exposed = list(dict.fromkeys([*config.exposed_ports, *image.exposed_ports]))
    del config.exposed_ports[:]
    config.exposed_ports.extend(exposed)
    user_keys = {item.split("=", 1)[0] for item in config.env}
    env = [item for item in image.env if item.split("=", 1)[0] not in user_keys]
    env.extend(config.env)
    del config.env[:]
    config.env.extend(env)
    if not config.entrypoint.values:
        if not config.cmd.values and image.HasField("cmd"):
            config.cmd.CopyFrom(image.cmd)
        if not config.HasField("entrypoint") and image.HasField("entrypoint"):
            config.entrypoint.CopyFrom(image.entrypoint)
    if not config.working_dir:
        config.working_dir = image.working_dir
    volumes = list(dict.fromkeys([*config.volumes, *image.volumes]))
    del config.volumes[:]
    config.volumes.extend(volumes)
    for key, value in image.labels.items():
        config.labels.setdefault(key, value)
    if not config.stop_signal:
        config.stop_signal = image.stop_signal
    if not config.HasField("healthcheck") and image.HasField("healthcheck"):
        config.healthcheck.CopyFrom(image.healthcheck)
    if not config.shell:
        config.shell.extend(image.shell)
    if not config.on_build:
        config.on_build.extend(image.on_build)


def command(config: container_pb2.ContainerConfig) -> list[str]:
    return [*config.entrypoint.values, *config.cmd.values]


def validate(config: container_pb2.ContainerConfig, host: container_pb2.HostConfig) -> None:
    if not command(config):
        raise InvalidArgument("No command specified")
    if config.working_dir and not config.working_dir.startswith("/"):
        raise InvalidArgument(f"the working directory '{config.working_dir}' is invalid, it "
                              f"needs to be an absolute path")
    check_no_nul(config)
    refuse_nul(host, "host config")
    if config.stop_signal:
        try:
            signal_number(config.stop_signal)
        except ValueError:
            raise InvalidArgument(f"Invalid signal: {config.stop_signal}") from None
    validate_resources(host.resources)
    validate_restart_policy(host)
    if host.cgroupns_mode not in ("", "host", "private"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {host.cgroupns_mode}")
    if host.shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    if host.isolation.lower() not in ("", "default"):
        raise InvalidArgument(f"invalid isolation ({host.isolation}): linux only supports "
                              f"'default'")
    if host.userns_mode.split(":")[0] not in ("", "host"):
        raise InvalidArgument("--userns: invalid USER mode")
    validate_storage_opt(dict(host.storage_opt))
    if "" in host.annotations:
        raise InvalidArgument("invalid Annotations: the empty string is not permitted as an "
                              "annotation key")
    for ulimit in host.resources.ulimits:
        if ulimit.soft > ulimit.hard >= 0:
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard "
                                  f"limit: {ulimit.soft} > {ulimit.hard}")


def check_no_nul(config: container_pb2.ContainerConfig) -> None:
    """A NUL cannot reach the kernel in a string: refused here, not by runc at start."""
    fields = {"working directory": [config.working_dir], "hostname": [config.hostname],
              "domainname": [config.domainname], "environment variable": list(config.env)}
    for what, values in fields.items():
        for value in values:
            if "\0" in value:
                raise InvalidArgument(f"invalid {what} {value!r}: it contains a NUL character")


def validate_storage_opt(options: dict[str, str]) -> None:
    """berth's overlay has no disk quota: dockerd's overlay2 answer where
    the backing filesystem is not xfs with pquota."""
    keys = [key.lower() for key in options]
    if "size" in keys:
        raise InvalidArgument(_STORAGE_QUOTA_ERROR)
    if keys:
        raise InvalidArgument(f"Unknown option {keys[0]}")


def discard_unsupported_blkio(res: container_pb2.Resources) -> list[str]:
    """Drop the blkio settings this kernel lacks, with dockerd's warnings
    (dockerd creates or updates the container without them)."""
    warnings = []
    for field_name, v1_file, warning in _BLKIO_SETTINGS:
        if getattr(res, field_name) and not cgroups.blkio_supports(v1_file):
            res.ClearField(field_name)
            warnings.append(warning)
    return warnings


def validate_runtime(host: container_pb2.HostConfig, configured: str) -> None:
    if host.runtime and host.runtime not in ("runc", configured):
        raise InvalidArgument(f"Unknown runtime specified {host.runtime}")


def _validate_cgroup_files(res: container_pb2.Resources) -> None:
    """Hugepage sizes the host has; unified files only on cgroup v2."""
    sizes = cgroups.hugepage_sizes() if res.hugepage_limits else []
    for limit in res.hugepage_limits:
        if limit.page_size not in sizes:
            raise InvalidArgument(f"invalid hugepage size {limit.page_size!r}: this host has "
                                  f"{', '.join(sizes) or 'no hugepages'}")
    if res.unified and not cgroups.is_v2():
        raise InvalidArgument("unified resources are cgroup v2 files, and this host has "
                              "cgroup v1")
    for key in res.unified:
        if not key or "/" in key or key.startswith("."):
            raise InvalidArgument(f"invalid unified resource {key!r}: not a cgroup file name")


def validate_resources(res: container_pb2.Resources) -> None:
    _validate_cgroup_files(res)
    if res.memory and res.memory < _MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if res.memory_swap > 0 and res.memory <= 0:
        raise InvalidArgument(
            "You should always set the Memory limit when using Memoryswap limit, see usage")
    if res.memory_swap > 0 and res.memory_swap < res.memory:
        raise InvalidArgument(
            "Minimum memoryswap limit should be larger than memory limit, see usage")
    if 0 < res.memory_reservation < _MIN_MEMORY:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if res.memory > 0 and res.memory_reservation > res.memory:
        raise InvalidArgument("Minimum memory limit can not be less than memory reservation "
                              "limit, see usage")
    if res.HasField("memory_swappiness") and not -1 <= res.memory_swappiness <= 100:
        raise InvalidArgument(f"Invalid value: {res.memory_swappiness}, valid memory "
                              "swappiness range is 0-100")
    if res.nano_cpus and res.cpu_period:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if res.nano_cpus and res.cpu_quota:
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    cpus = os.cpu_count() or 1
    if res.nano_cpus < 0 or res.nano_cpus > cpus * 1_000_000_000:
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {cpus}.00, as there are only "
                              f"{cpus} CPUs available")
    if res.cpu_period and not 1000 <= res.cpu_period <= 1_000_000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger "
                              "than 1s (i.e. 1000000)")
    if 0 < res.cpu_quota < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if (res.cpu_realtime_period or res.cpu_realtime_runtime) and not _cpu_realtime_supported():
        raise InvalidArgument("Your kernel does not support CPU real-time scheduler")
    if 0 < res.cpu_realtime_period < res.cpu_realtime_runtime:
        raise InvalidArgument("cpu-rt-runtime cannot be higher than cpu-rt-period")
    if res.cpu_shares < 0:
        raise InvalidArgument("invalid CPU shares value: must not be negative")
    if res.blkio_weight and not 10 <= res.blkio_weight <= 1000:
        raise InvalidArgument("Range of blkio weight is from 10 to 1000")
    spec.device_cgroup_rules(list(res.device_cgroup_rules))
    for path in spec.blkio_device_paths(res):
        spec.device_numbers(path)


def validate_restart_policy(host: container_pb2.HostConfig) -> None:
    policy = host.restart_policy
    if policy.name not in _RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy: unknown policy '{policy.name}'; use "
                              "one of 'no', 'always', 'on-failure', or 'unless-stopped'")
    if policy.maximum_retry_count < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    if policy.maximum_retry_count and policy.name != "on-failure":
        raise InvalidArgument("invalid restart policy: maximum retry count can only be used "
                              "with 'on-failure'")
    if host.auto_remove and policy.name not in ("", "no"):
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")


def replace_or_append_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """moby's ReplaceOrAppendEnvValues: `KEY=value` replaces or adds KEY,
    a bare `KEY` unsets it."""
    env = {variable.partition("=")[0]: variable for variable in defaults}
    for variable in overrides:
        key, sep, _ = variable.partition("=")
        if sep:
            env[key] = variable
        else:
            env.pop(key, None)
    return list(env.values())


def _cpu_realtime_supported() -> bool:
    """Docker's sysinfo CPURealtime: the v1 cpu controller has rt files."""
    return (cgroups.ROOT / "cpu" / "cpu.rt_runtime_us").exists()
