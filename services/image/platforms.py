"""Platform selectors on local images (inspect, history, save, load, push,
rmi): as dockerd's graphdriver image store, which keeps one platform per
image, the image named must be of the platform asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.common.errors import InvalidArgument, NotFound

# Names the kernel or other tools use for what OCI calls amd64 and arm64.
_ARCHITECTURE_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}


@dataclass
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        if not text:
            return cls()
        parts = text.lower().split("/")
        if len(parts) < 2 or not all(parts):
            raise InvalidArgument(f'"{text}": unknown operating system or architecture: '
                                  f"invalid argument")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "")

    def matches(self, entry: dict[str, Any]) -> bool:
        platform = entry.get("platform") or {}
        if platform.get("os") != self.os or platform.get("architecture") != self.architecture:
            return False
        return not self.variant or platform.get("variant", "") == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def of_config(config: dict[str, Any]) -> Platform:
    return Platform(config.get("os") or "linux", _normal(config.get("architecture") or ""),
                    config.get("variant") or "")


def matches(wanted: Platform, config: dict[str, Any]) -> bool:
    """containerd's platforms.Only, close enough for one-platform images: same
    OS and architecture; a variant asked for must be the image's (arm64's v8
    being the default)."""
    have = of_config(config)
    if (wanted.os, _normal(wanted.architecture)) != (have.os, have.architecture):
        return False
    if not wanted.variant:
        return True
    default = "v8" if have.architecture == "arm64" else ""
    return wanted.variant == (have.variant or default)


def require(name: str, config: dict[str, Any], platform_text: str) -> None:
    """dockerd's GetImage with a platform: a NotFound naming both platforms."""
    if not platform_text:
        return
    wanted = Platform.parse(platform_text)
    if not matches(wanted, config):
        raise NotFound(f"image with reference {name} was found but its platform "
                       f"({of_config(config)}) does not match the specified platform "
                       f"({wanted})")


def _normal(architecture: str) -> str:
    return _ARCHITECTURE_ALIASES.get(architecture.lower(), architecture.lower())
