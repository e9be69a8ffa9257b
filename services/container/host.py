"""Facts about the host the containers run on, which Docker's /info and
/version report. The container service owns this host, so it reads them
here; the gateway, which may run elsewhere, only formats them."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from services.common.config import Config
from services.common.engine_config import setting

# The containers' root file systems are overlay mounts (rootfs.mount_overlay).
STORAGE_DRIVER = "overlay2"
CGROUP_DRIVER = "cgroupfs"
_DRIVER_STATUS = [("Supports d_type", "true"), ("Using metacopy", "false"),
                  ("Native Overlay Diff", "true")]
# Docker's names for the file systems a data root sits on.
_FILE_SYSTEMS = {"ext2": "extfs", "ext3": "extfs", "ext4": "extfs"}


@dataclass
class HostFacts:
    id: str
    name: str
    kernel_version: str
    operating_system: str
    os_version: str
    architecture: str
    ncpu: int
    mem_total: int
    cgroup_version: str
    driver_status: list[tuple[str, str]]
    security_options: list[str]
    runtimes: dict[str, str]          # name -> path
    default_runtime: str
    root_dir: str
    components: dict[str, str] = field(default_factory=dict)   # runc, conmon -> version
    # Containers keep running across an engine restart (conmon holds them).
    live_restore: bool = True
    labels: list[str] = field(default_factory=list)
    debug: bool = False
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)


def host_facts(config: Config) -> HostFacts:
    runtime = config.engine.get("runtime", "runc")
    cgroup = cgroup_version()
    return HostFacts(
        id=engine_id(config.data_root), name=socket.gethostname(),
        kernel_version=platform.release(), operating_system=_os_release("PRETTY_NAME", "Linux"),
        os_version=_os_release("VERSION_ID", ""), architecture=platform.machine(),
        ncpu=os.cpu_count() or 1, mem_total=_mem_total(), cgroup_version=cgroup,
        driver_status=[("Backing Filesystem", backing_filesystem(config.data_root)),
                       *_DRIVER_STATUS],
        security_options=["name=seccomp,profile=builtin",
                          *(["name=cgroupns"] if cgroup == "2" else [])],
        runtimes={runtime: runtime if "/" in runtime else shutil.which(runtime) or runtime},
        default_runtime=runtime, root_dir=str(config.data_root),
        components={tool: version for tool in ("runc", "conmon")
                    if (version := tool_version(tool))},
        labels=setting(config.engine, "labels"), debug=setting(config.engine, "debug"),
        insecure_registries=setting(config.engine, "insecure-registries"),
        registry_mirrors=setting(config.engine, "registry-mirrors"))


def _os_release(key: str, default: str) -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return default


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def cgroup_version() -> str:
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


def backing_filesystem(path: Path) -> str:
    """The type of the file system `path` is on: its deepest mount point's."""
    target = str(path.resolve())
    best, fs_type = "", "unknown"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4].encode().decode("unicode_escape")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fs_type = mount_point, fields[fields.index("-") + 1]
    return _FILE_SYSTEMS.get(fs_type, fs_type)


def engine_id(data_root: Path) -> str:
    """A stable ID for this engine, derived from its host and data root."""
    digest = hashlib.sha256(f"{socket.gethostname()}:{data_root.resolve()}".encode()).hexdigest()
    return "-".join(digest[i:i + 4].upper() for i in range(0, 48, 4))


@cache
def tool_version(binary: str) -> str:
    """Last word of the first line of `<binary> --version`, or "" when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        return ""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split()[-1] if first else ""


def kernel_supports_recursive_read_only(release: str) -> bool:
    """mount_setattr(2) with AT_RECURSIVE, which rro needs, came in Linux 5.12."""
    numbers = re.match(r"(\d+)\.(\d+)", release)
    return numbers is not None and (int(numbers[1]), int(numbers[2])) >= (5, 12)


@cache
def recursive_read_only_error(runtime_binary: str) -> str:
    """Why a read-only bind cannot be read-only recursively here, in
    dockerd's words; "" when the kernel and the OCI runtime both can."""
    release = platform.release()
    if not kernel_supports_recursive_read_only(release):
        return f"rro is not supported: kernel {release} (kernel is older than 5.12?)"
    name = Path(runtime_binary).name
    try:
        out = subprocess.run([runtime_binary, "features"], capture_output=True, text=True,
                             timeout=5, check=True).stdout
        features = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return f'rro is not supported by runtime "{name}": OCI features struct is not available'
    if "rro" not in features.get("mountOptions", []):
        return f'rro is not supported by runtime "{name}"'
    return ""
