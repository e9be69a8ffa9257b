"""Facts about the host that /info and /version report."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
from functools import cache
from pathlib import Path


def kernel_version() -> str:
    return platform.release()


def operating_system() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


def os_version() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_ID="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return ""


def mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def architecture() -> str:
    """Docker reports uname's machine for Architecture and GOARCH for Arch."""
    return platform.machine()


def go_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(
        platform.machine(), platform.machine())


def cgroup_version() -> str:
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


def hostname() -> str:
    return socket.gethostname()


def engine_id(data_root: Path) -> str:
    """A stable ID for this engine, derived from its host and data root."""
    digest = hashlib.sha256(f"{hostname()}:{data_root.resolve()}".encode()).hexdigest()
    return "-".join(digest[i:i + 4].upper() for i in range(0, 48, 4))


@cache
def tool_version(binary: str) -> str:
    """First line of `<binary> --version`, or "" when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        return ""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split()[-1] if first else ""


def ncpu() -> int:
    return os.cpu_count() or 1
