"""Paths of a container's cgroup files on cgroup v1 (one mount per
controller) or v2 (one unified hierarchy)."""

from __future__ import annotations

import contextlib
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


def blkio_supports(v1_file: str) -> bool:
    """dockerd's sysinfo: a v1 blkio setting is there when the controller's
    root has its file (the weights need CFQ or BFQ, the throttles
    CONFIG_BLK_DEV_THROTTLING); on v2 the io controller has them all."""
    if is_v2():
        return "io" in (ROOT / "cgroup.controllers").read_text().split()
    return (ROOT / "blkio" / v1_file).exists()


def hugetlb_present() -> bool:
    """Whether runc can set hugepage limits: the hugetlb controller in the
    unified hierarchy (v2), or mounted as its own hierarchy (v1; on a hybrid
    host an unmounted one serves the v2 hierarchy, which runc's v1 driver
    does not use)."""
    if is_v2():
        return "hugetlb" in (ROOT / "cgroup.controllers").read_text().split()
    return (ROOT / "hugetlb").is_dir()


def hugepage_sizes() -> list[str]:
    """The host's hugepage sizes as the OCI spec names them ("2MB", "1GB")."""
    sizes = []
    for directory in sorted(Path("/sys/kernel/mm/hugepages").glob("hugepages-*kB")):
        kilobytes = int(directory.name.removeprefix("hugepages-").removesuffix("kB"))
        for unit, scale in (("GB", 1 << 20), ("MB", 1 << 10), ("KB", 1)):
            if kilobytes % scale == 0:
                sizes.append(f"{kilobytes // scale}{unit}")
                break
    return sizes


def hugetlb_limit_file(path: str, page_size: str) -> Path:
    if is_v2():
        return ROOT / path.lstrip("/") / f"hugetlb.{page_size}.max"
    return ROOT / "hugetlb" / path.lstrip("/") / f"hugetlb.{page_size}.limit_in_bytes"


def cgroups_path(instance_prefix: str, container_id: str, parent: str = "") -> str:
    """The OCI cgroupsPath of a container (cgroupfs driver): under the
    engine's parent, or under --cgroup-parent as dockerd puts it."""
    return f"/{parent.strip('/') or instance_prefix}/{container_id}"


def read_value(path: str, v1: tuple[str, str], v2: tuple[str, str] | None = None) -> str | None:
    """A cgroup file of `path`: v1 (controller, file), v2 (file, key in it)."""
    try:
        if not is_v2():
            controller, name = v1
            return (ROOT / controller / path.lstrip("/") / name).read_text().strip()
        if v2 is None:
            return None
        name, key = v2
        text = (ROOT / path.lstrip("/") / name).read_text()
    except OSError:
        return None
    if not key:
        return text.strip()
    for line in text.splitlines():
        field, _, value = line.partition(" ")
        if field == key:
            return value
    return None


def cpu_seconds(path: str) -> float | None:
    if is_v2():
        usec = read_value(path, ("", ""), ("cpu.stat", "usage_usec"))
        return int(usec) / 1e6 if usec else None
    nsec = read_value(path, ("cpuacct", "cpuacct.usage"))
    return int(nsec) / 1e9 if nsec else None


def memory_bytes(path: str) -> int | None:
    value = read_value(path, ("memory", "memory.usage_in_bytes"), ("memory.current", ""))
    return int(value) if value else None


def pids(path: str) -> int | None:
    value = read_value(path, ("pids", "pids.current"), ("pids.current", ""))
    return int(value) if value else None


def remove_instance_parent(instance_prefix: str) -> None:
    """rmdir the engine's parent cgroup in every hierarchy once it is empty
    (runc removes only the containers' own cgroups)."""
    roots = [ROOT] if is_v2() else [p for p in ROOT.iterdir() if p.is_dir()]
    for root in roots:
        with contextlib.suppress(OSError):
            (root / instance_prefix).rmdir()
