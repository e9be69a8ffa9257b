"""The OCI runtime spec (config.json) of a container, as Docker builds it."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import stat
from dataclasses import dataclass, field
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import InvalidArgument
from services.container import cgroups, seccomp
from services.container.mounts import mount_depth

DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")
ALL_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE")
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_SHM_BYTES = 64 << 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH = "/sbin/docker-init"
# Host /dev entries a privileged container does not get (it has its own).
_SKIPPED_DEV = {"/dev/pts", "/dev/shm", "/dev/mqueue"}
_CPU_PERIOD = 100_000

# Docker's default device cgroup rules: deny all, allow mknod, the usual nodes.
_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
      for major, minor in ((1, 3), (1, 8), (1, 7), (5, 0), (1, 5), (1, 9), (5, 1),
                           (5, 2), (10, 200))),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]
# Docker's --device-cgroup-rule grammar: type, major:minor (or *), access.
_DEVICE_CGROUP_RULE = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})")
_INT64_MAX = (1 << 63) - 1
# OCI linux.resources.blockIO throttle keys and the Resources fields they come from.
_BLKIO_THROTTLES = (("throttleReadBpsDevice", "blkio_device_read_bps"),
                    ("throttleWriteBpsDevice", "blkio_device_write_bps"),
                    ("throttleReadIOPSDevice", "blkio_device_read_iops"),
                    ("throttleWriteIOPSDevice", "blkio_device_write_iops"))
_RLIMITS = {"core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA",
            "fsize": "RLIMIT_FSIZE", "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK",
            "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE",
            "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
            "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING",
            "stack": "RLIMIT_STACK", "as": "RLIMIT_AS"}


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"


@dataclass
class SpecInputs:
    """What the spec needs beyond the container's own config."""

    container_id: str
    args: list[str]
    env: list[str]
    user: User
    rootfs: Path
    cgroups_path: str
    netns_path: str | None          # None: no network namespace (host)
    files: dict[str, Path]          # /etc/hosts etc. -> file in the bundle
    extra_mounts: list[dict] = field(default_factory=list)
    namespace_paths: dict[str, str] = field(default_factory=dict)  # ipc/pid -> other's ns
    host_namespaces: set[str] = field(default_factory=set)         # ipc/pid/uts on the host
    init_binary: str | None = None


def build(config: container_pb2.ContainerConfig, host: container_pb2.HostConfig,
          inputs: SpecInputs) -> dict:
    caps = capabilities(host)
    args = [INIT_PATH, "--", *inputs.args] if inputs.init_binary else inputs.args
    process = {
        "terminal": config.tty, "args": args, "env": inputs.env,
        "cwd": config.working_dir or "/",
        "user": {"uid": inputs.user.uid, "gid": inputs.user.gid,
                 "additionalGids": inputs.user.additional_gids},
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(host.resources.ulimits),
        "noNewPrivileges": _no_new_privileges(host.security_opt),
        "oomScoreAdj": host.oom_score_adj,
    }
    if config.tty and len(host.console_size) == 2 and all(host.console_size):
        process["consoleSize"] = {"height": host.console_size[0], "width": host.console_size[1]}
    spec = {
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": str(inputs.rootfs), "readonly": host.readonly_rootfs},
        "hostname": "" if "uts" in inputs.host_namespaces else config.hostname,
        "mounts": _mounts(host, inputs),
        "linux": _linux(host, inputs, caps),
    }
    if config.domainname and "uts" not in inputs.host_namespaces:
        spec["domainname"] = config.domainname
    if host.annotations:
        spec["annotations"] = dict(host.annotations)
    return spec


def held_by_host(caps: list[str]) -> list[str]:
    """The caps this process may grant: runc fails on any outside its bounding
    set (ALL_CAPS is in bit order)."""
    status = Path("/proc/self/status").read_text()
    bounding = int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("CapBnd:")), 16)
    return [cap for cap in caps if bounding >> ALL_CAPS.index(cap) & 1]


def capabilities(host: container_pb2.HostConfig) -> list[str]:
    return held_by_host(_wanted_capabilities(host))


def _wanted_capabilities(host: container_pb2.HostConfig) -> list[str]:
    if host.privileged:
        return list(ALL_CAPS)
    add = {_cap_name(c) for c in host.cap_add}
    drop = {_cap_name(c) for c in host.cap_drop}
    for field_name, names in (("CapAdd", add), ("CapDrop", drop)):
        unknown = sorted(n for n in names if n != "CAP_ALL" and n not in ALL_CAPS)
        if unknown:
            raise InvalidArgument(f'invalid {field_name}: unknown capability: "{unknown[0]}"')
    base = set() if "CAP_ALL" in drop else set(DEFAULT_CAPS) - drop
    extra = set(ALL_CAPS) if "CAP_ALL" in add else add
    chosen = (base | extra) - ({"CAP_ALL"} | (drop if "CAP_ALL" not in add else set()))
    return [cap for cap in ALL_CAPS if cap in chosen]


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _no_new_privileges(security_opt: list[str]) -> bool:
    return any(opt.split("=")[0].split(":")[0] == "no-new-privileges"
               and opt.split("=", 1)[-1].split(":", 1)[-1] in ("no-new-privileges", "true")
               for opt in security_opt)


def host_hard_limit(name: str) -> int:
    """The service's own hard limit: a container never asks for more."""
    _, hard = resource.getrlimit(getattr(resource, _RLIMITS[name]))
    return hard


def _clamp(value: int, hard: int) -> int:
    if hard == resource.RLIM_INFINITY or value < 0:
        return value if value >= 0 else hard
    return min(value, hard)


def rlimits(ulimits: list[container_pb2.Ulimit]) -> list[dict]:
    nofile_hard = host_hard_limit("nofile")
    wanted = {"nofile": (min(1048576, nofile_hard), min(1048576, nofile_hard))}
    for ulimit in ulimits:
        if ulimit.name not in _RLIMITS:
            raise InvalidArgument(f"invalid ulimit type: {ulimit.name}")
        wanted[ulimit.name] = (ulimit.soft, ulimit.hard)
    limits = []
    for name, (soft, hard) in wanted.items():
        host_hard = host_hard_limit(name)
        hard = _clamp(hard, host_hard)
        limits.append({"type": _RLIMITS[name], "hard": hard, "soft": min(_clamp(soft, host_hard),
                                                                       hard)})
    return limits


def _mounts(host: container_pb2.HostConfig, inputs: SpecInputs) -> list[dict]:
    shm = host.shm_size or DEFAULT_SHM_BYTES
    sys_opts = ["nosuid", "noexec", "nodev", "rw" if host.privileged else "ro"]
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]
    if "ipc" not in inputs.host_namespaces:
        mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                       "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]})
    files = [{"destination": target, "type": "bind", "source": str(source),
              "options": ["rbind", "rprivate"]} for target, source in inputs.files.items()]
    replaced = {m["destination"] for m in inputs.extra_mounts}
    # As dockerd: the user's mounts and the network files sorted together by
    # depth, so a volume on /etc does not hide /etc/hosts; the init binary last.
    ordered = sorted([*inputs.extra_mounts,
                      *(f for f in files if f["destination"] not in replaced)],
                     key=mount_depth)
    if inputs.init_binary:
        ordered.append({"destination": INIT_PATH, "type": "bind",
                        "source": inputs.init_binary, "options": ["bind", "ro"]})
    return [m for m in mounts if m["destination"] not in replaced] + ordered


def _namespaces(host: container_pb2.HostConfig, inputs: SpecInputs) -> list[dict]:
    namespaces = [{"type": "mount"}]
    if inputs.netns_path is not None:
        namespaces.append({"type": "network", "path": inputs.netns_path}
                          if inputs.netns_path else {"type": "network"})
    for kind in ("pid", "ipc", "uts"):
        if kind in inputs.host_namespaces:
            continue
        path = inputs.namespace_paths.get(kind)
        namespaces.append({"type": kind, "path": path} if path else {"type": kind})
    # Docker's default cgroupns is private on cgroup v2, the host's on v1.
    if host.cgroupns_mode == "private" or (cgroups.is_v2() and host.cgroupns_mode != "host"):
        namespaces.append({"type": "cgroup"})
    return namespaces


def _device_entry(path: str, info: os.stat_result) -> dict | None:
    """An OCI linux.devices entry for a character or block node, else None."""
    kind = "c" if stat.S_ISCHR(info.st_mode) else "b" if stat.S_ISBLK(info.st_mode) else ""
    if not kind:
        return None
    return {"path": path, "type": kind, "major": os.major(info.st_rdev),
            "minor": os.minor(info.st_rdev), "fileMode": stat.S_IMODE(info.st_mode),
            "uid": info.st_uid, "gid": info.st_gid}


def host_devices() -> list[dict]:
    """Every device node of the host's /dev, as a privileged container sees them."""
    devices = []
    for directory, subdirs, files in os.walk("/dev"):
        subdirs[:] = [d for d in subdirs if os.path.join(directory, d) not in _SKIPPED_DEV]
        for name in files:
            path = os.path.join(directory, name)
            try:
                entry = _device_entry(path, os.lstat(path))
            except OSError:
                continue
            if entry and path != "/dev/console":
                devices.append(entry)
    return devices


def _mapped_nodes(mapping: container_pb2.DeviceMapping) -> list[dict]:
    """The device nodes of one --device: the node itself, or every node
    under a directory (symlinks on the host resolved first, as moby does)."""
    host_path = os.path.realpath(mapping.path_on_host)
    inside = mapping.path_in_container or mapping.path_on_host
    try:
        node = _device_entry(inside, os.stat(host_path))
        if node:
            return [node]
        if not os.path.isdir(host_path):
            raise OSError(errno.ENODEV, "not a device node")
        nodes = []
        for directory, _, files in os.walk(host_path):
            for name in sorted(files):
                path = os.path.join(directory, name)
                node = _device_entry(os.path.join(inside, os.path.relpath(path, host_path)),
                                     os.stat(path))
                if node:
                    nodes.append(node)
        return nodes
    except OSError as exc:
        raise InvalidArgument(f"error gathering device information while adding custom "
                              f'device "{mapping.path_on_host}": {exc.strerror.lower()}') from exc


def refuse_device_requests(requests: list[container_pb2.DeviceRequest]) -> None:
    """--gpus and other DeviceRequests: berth has no device driver, so the
    first request fails as in a dockerd without one."""
    for request in requests:
        wanted = " ".join(f"[{' '.join(c.capabilities)}]" for c in request.capabilities)
        raise InvalidArgument(f'could not select device driver "{request.driver}" with '
                              f"capabilities: [{wanted}]")


def mapped_devices(mappings: list[container_pb2.DeviceMapping]) -> tuple[list[dict], list[dict]]:
    """--device: the nodes the container gets and the cgroup rules letting it use them."""
    devices, rules = [], []
    for mapping in mappings:
        for node in _mapped_nodes(mapping):
            devices.append(node)
            rules.append({"allow": True, "type": node["type"], "major": node["major"],
                          "minor": node["minor"], "access": mapping.cgroup_permissions or "rwm"})
    return devices, rules


def device_cgroup_rules(rules: list[str]) -> list[dict]:
    """--device-cgroup-rule as OCI linux.resources.devices entries, with
    Docker's messages for a rule that does not parse."""
    entries = []
    for rule in rules:
        match = _DEVICE_CGROUP_RULE.fullmatch(rule)
        if not match:
            raise InvalidArgument(f"invalid device cgroup rule format: '{rule}'")
        kind, major, minor, access = match.groups()
        entry: dict = {"allow": True, "type": kind, "access": access}
        for name, number in (("major", major), ("minor", minor)):
            if number == "*":
                continue    # an absent number matches every one
            if int(number) > _INT64_MAX:
                raise InvalidArgument(f"invalid {name} value in device cgroup rule "
                                      f"format: '{rule}'")
            entry[name] = int(number)
        entries.append(entry)
    return entries


def device_numbers(path: str) -> dict:
    """The major and minor numbers of the node at `path` (links followed),
    as dockerd reads a blkio device; the kernel refuses a non-disk later."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"stat {path}: {exc.strerror.lower()}") from exc
    except ValueError as exc:    # a NUL in the path: Go's stat says EINVAL
        raise InvalidArgument(f"stat {path}: invalid argument") from exc
    return {"major": os.major(info.st_rdev), "minor": os.minor(info.st_rdev)}


def block_io(res: container_pb2.Resources) -> dict:
    """OCI linux.resources.blockIO: the weight and the per-device settings."""
    out: dict = {}
    if res.blkio_weight > 0:
        out["weight"] = res.blkio_weight
    if res.blkio_weight_device:
        out["weightDevice"] = [{**device_numbers(d.path), "weight": d.weight}
                               for d in res.blkio_weight_device]
    for key, field_name in _BLKIO_THROTTLES:
        devices = getattr(res, field_name)
        if devices:
            out[key] = [{**device_numbers(d.path), "rate": d.rate} for d in devices]
    return out


def blkio_device_paths(res: container_pb2.Resources) -> list[str]:
    return [d.path for d in res.blkio_weight_device] + [
        d.path for _, field_name in _BLKIO_THROTTLES for d in getattr(res, field_name)]


def _linux(host: container_pb2.HostConfig, inputs: SpecInputs, caps: list[str]) -> dict:
    linux = {
        "namespaces": _namespaces(host, inputs),
        "cgroupsPath": inputs.cgroups_path,
        "resources": resources(host.resources, host.privileged),
        "sysctl": dict(host.sysctls),
    }
    propagation = rootfs_propagation(inputs.extra_mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation
    if host.privileged:
        linux["devices"] = host_devices()
        return linux
    refuse_device_requests(list(host.resources.device_requests))
    devices, rules = mapped_devices(list(host.resources.devices))
    if devices:
        linux["devices"] = devices
    linux["resources"]["devices"] += rules + device_cgroup_rules(
        list(host.resources.device_cgroup_rules))
    linux["maskedPaths"] = list(host.masked_paths or MASKED_PATHS)
    linux["readonlyPaths"] = list(host.readonly_paths or READONLY_PATHS)
    profile = seccomp_profile(host.security_opt, set(caps))
    if profile:
        linux["seccomp"] = profile
    return linux


def rootfs_propagation(mounts: list[dict]) -> str:
    """As dockerd sets it: a shared bind needs the container's root shared
    (else runc makes every mount a slave and nothing flows back to the
    host), a slave bind needs it a slave; "" keeps runc's default."""
    modes = {option for mount in mounts for option in mount.get("options", [])}
    if modes & {"shared", "rshared"}:
        return "rshared"
    if modes & {"slave", "rslave"}:
        return "rslave"
    return ""


_SECURITY_OPTS = ("seccomp", "apparmor", "label", "no-new-privileges", "writable-cgroups")


def check_security_opt(security_opt: list[str]) -> None:
    for opt in security_opt:
        key = opt.replace(":", "=", 1).split("=", 1)[0]
        if key not in _SECURITY_OPTS:
            raise InvalidArgument(f'invalid --security-opt 2: "{opt}"')


def seccomp_profile(security_opt: list[str], caps: set[str]) -> dict | None:
    """`seccomp=unconfined`, `seccomp=<profile JSON>` (the CLI sends the
    file's content) or Docker's default profile."""
    for opt in security_opt:
        if not opt.startswith(("seccomp=", "seccomp:")):
            continue
        value = opt[len("seccomp="):]
        if value == "unconfined":
            return None
        try:
            return seccomp.oci_profile(json.loads(value), caps)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"Decoding seccomp profile failed: {exc}") from exc
    return seccomp.default_profile(caps)


def resources(res: container_pb2.Resources, privileged: bool) -> dict:
    out: dict = {"devices": [{"allow": True, "access": "rwm"}] if privileged
                 else list(_DEVICE_RULES)}
    memory: dict = {}
    if res.memory > 0:
        memory["limit"] = res.memory
        swap = res.memory_swap or 2 * res.memory
        memory["swap"] = swap
    if res.memory_reservation > 0:
        memory["reservation"] = res.memory_reservation
    if res.HasField("oom_kill_disable") and res.oom_kill_disable:
        memory["disableOOMKiller"] = True
    if res.HasField("memory_swappiness") and res.memory_swappiness >= 0:
        memory["swappiness"] = res.memory_swappiness
    if memory:
        out["memory"] = memory
    cpu: dict = {}
    if res.nano_cpus > 0:
        cpu["period"] = _CPU_PERIOD
        cpu["quota"] = res.nano_cpus * _CPU_PERIOD // 1_000_000_000
    if res.cpu_period > 0:
        cpu["period"] = res.cpu_period
    if res.cpu_quota > 0:
        cpu["quota"] = res.cpu_quota
    if res.cpu_shares > 0:
        cpu["shares"] = res.cpu_shares
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if res.cpu_realtime_period > 0:
        cpu["realtimePeriod"] = res.cpu_realtime_period
    if res.cpu_realtime_runtime > 0:
        cpu["realtimeRuntime"] = res.cpu_realtime_runtime
    if cpu:
        out["cpu"] = cpu
    if res.HasField("pids_limit") and res.pids_limit > 0:
        out["pids"] = {"limit": res.pids_limit}
    if block := block_io(res):
        out["blockIO"] = block
    if res.hugepage_limits and cgroups.hugetlb_present():
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit}
                                 for h in res.hugepage_limits]
    if res.unified:
        out["unified"] = dict(res.unified)
    return out
