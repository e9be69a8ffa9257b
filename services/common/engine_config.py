"""The engine config file (`--config`, daemon.json keys): its checks, and
what a reload on SIGHUP changes, as dockerd does.

Every process reads the same file and uses the keys it needs. Keys berth
does not use are left alone, so a daemon.json written for dockerd loads.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.common.errors import InvalidArgument

# The keys dockerd applies on reload that berth uses too. Absent from the
# new file, most keep their value (dockerd cannot tell them from flags);
# the transfer limits go back to their defaults.
RELOADABLE = ("debug", "labels", "insecure-registries", "registry-mirrors",
              "max-concurrent-downloads", "max-concurrent-uploads")
RESET_WHEN_ABSENT = ("max-concurrent-downloads", "max-concurrent-uploads")
DEFAULTS: dict[str, Any] = {
    "debug": False, "labels": [], "insecure-registries": [], "registry-mirrors": [],
    "max-concurrent-downloads": 3, "max-concurrent-uploads": 5,
}
_TYPES: dict[str, type] = {
    "debug": bool, "labels": list, "insecure-registries": list, "registry-mirrors": list,
    "max-concurrent-downloads": int, "max-concurrent-uploads": int,
    "runtime": str, "init": bool, "certs-dir": str, "cri-sandbox-image": str,
}
_TYPE_NAMES = {bool: "true or false", list: "a list", int: "an integer", str: "a string"}


def read_engine_config(path: Path | None) -> dict[str, Any]:
    """The checked settings of `path`; {} without a file."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"unable to configure the engine with file {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidArgument(f"unable to configure the engine with file {path}: "
                              "the file must hold a JSON object")
    try:
        check(document)
    except InvalidArgument as exc:
        raise InvalidArgument(f"file configuration validation failed: {exc.message}") from None
    return document


def check(document: dict[str, Any]) -> None:
    """dockerd's checks of the keys berth uses, with its messages."""
    for key, expected in _TYPES.items():
        value = document.get(key)
        # JSON true is a Python int too: a boolean is no number here.
        wrong_bool = expected is int and isinstance(value, bool)
        if value is not None and (wrong_bool or not isinstance(value, expected)):
            raise InvalidArgument(f"invalid value for {key}: {json.dumps(value)} "
                                  f"(expected {_TYPE_NAMES[expected]})")
    for key in ("labels", "insecure-registries", "registry-mirrors"):
        if not all(isinstance(item, str) for item in document.get(key) or []):
            raise InvalidArgument(f"invalid value for {key}: expected a list of strings")
    check_labels(document.get("labels") or [])
    for registry in document.get("insecure-registries") or []:
        check_insecure_registry(registry)
    for mirror in document.get("registry-mirrors") or []:
        check_mirror(mirror)
    for key, what in (("max-concurrent-downloads", "downloads"),
                      ("max-concurrent-uploads", "uploads")):
        if (document.get(key) or 0) < 0:
            raise InvalidArgument(f"invalid max concurrent {what}: {document[key]}")


def check_labels(labels: list[str]) -> None:
    """key=value each, and one value per key."""
    seen: dict[str, str] = {}
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep:
            raise InvalidArgument(f"bad attribute format: {label}")
        if seen.setdefault(key, value) != value:
            raise InvalidArgument(f"conflict labels for {key}={seen[key]} and {label}")


def check_insecure_registry(registry: str) -> None:
    """A host[:port] name, or a CIDR (with a slash)."""
    if "://" in registry:
        raise InvalidArgument(f"insecure registry {registry} should not contain '://'")
    if "/" in registry:
        try:
            ipaddress.ip_network(registry, strict=False)
        except ValueError:
            raise InvalidArgument(f"insecure registry {registry} is not valid") from None


def check_mirror(mirror: str) -> None:
    url = urlsplit(mirror)
    if url.scheme not in ("http", "https"):
        raise InvalidArgument(f'invalid mirror: unsupported scheme "{url.scheme}" in "{mirror}"')
    if url.path not in ("", "/") or url.query or url.fragment:
        raise InvalidArgument(
            f'invalid mirror: path, query, or fragment at end of the URI "{mirror}"')
    if url.username or url.password:
        raise InvalidArgument(f'invalid mirror: username/password not allowed in URI "{mirror}"')


def reloaded(current: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """The settings after a reload with `document`: only the reloadable keys
    change (the others need a restart, as with dockerd)."""
    settings = {**current, **{key: document[key] for key in RELOADABLE if key in document}}
    for key in RESET_WHEN_ABSENT:
        if key not in document:
            settings.pop(key, None)
    return settings


def setting(engine: dict[str, Any], key: str) -> Any:
    """A reloadable setting's value, its default when unset (or 0, for the
    transfer limits, as dockerd)."""
    value = engine.get(key)
    unset = value is None or (key in RESET_WHEN_ABSENT and value == 0)
    return DEFAULTS[key] if unset else value
