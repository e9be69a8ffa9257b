"""Docker's default seccomp profile in OCI form.

The profile (services/container/seccomp_default.json, Docker's own file)
lists rules with conditions on the architecture, the container's
capabilities and the kernel version; the OCI spec wants only the rules that
apply, resolved for this host and this container.
"""

from __future__ import annotations

import json
import os
import platform
from functools import cache
from pathlib import Path

_PROFILE = Path(__file__).with_name("seccomp_default.json")

# Go's GOARCH names (used by the profile's arches conditions) for uname -m.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
# Native seccomp architecture of each GOARCH, as in the profile's archMap.
_SCMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64",
              "386": "SCMP_ARCH_X86", "arm": "SCMP_ARCH_ARM",
              "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X",
              "riscv64": "SCMP_ARCH_RISCV64"}


@cache
def _profile() -> dict:
    return json.loads(_PROFILE.read_text())


def _kernel_version() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _applies(rule: dict, goarch: str, caps: set[str]) -> bool:
    includes, excludes = rule.get("includes", {}), rule.get("excludes", {})
    if includes.get("arches") and goarch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if "minKernel" in includes and _kernel_version() < _version(includes["minKernel"]):
        return False
    if goarch in excludes.get("arches", []):
        return False
    return not set(excludes.get("caps", [])) & caps


def _architectures(profile: dict, goarch: str) -> list[str]:
    if profile.get("architectures"):
        return list(profile["architectures"])
    native = _SCMP_ARCH.get(goarch)
    for entry in profile.get("archMap") or _profile()["archMap"]:
        if entry["architecture"] == native:
            return [native, *entry["subArchitectures"]]
    return [native] if native else []


def default_profile(caps: set[str]) -> dict:
    """The OCI `linux.seccomp` object for a container holding `caps`."""
    return oci_profile(_profile(), caps)


def oci_profile(profile: dict, caps: set[str]) -> dict:
    """A profile in Docker's format (`--security-opt seccomp=FILE`) in OCI form."""
    goarch = _GOARCH.get(platform.machine(), platform.machine())
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, goarch, caps):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        entry = {"names": names, "action": rule["action"]}
        if "errnoRet" in rule:
            entry["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            entry["args"] = [{"index": a["index"], "value": a["value"],
                              "valueTwo": a.get("valueTwo", 0), "op": a["op"]}
                             for a in rule["args"]]
        syscalls.append(entry)
    oci = {"defaultAction": profile["defaultAction"],
           "architectures": _architectures(profile, goarch), "syscalls": syscalls}
    if "defaultErrnoRet" in profile:
        oci["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return oci
