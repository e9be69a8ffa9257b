"""Docker's Volume JSON from the volume service's protos."""

from __future__ import annotations

from typing import Any

from berth.volume.v1 import volume_pb2


def volume_to_json(volume: volume_pb2.Volume, usage: bool = False) -> dict[str, Any]:
    """Docker's Volume object; UsageData only when sizes were computed."""
    out: dict[str, Any] = {
        "CreatedAt": volume.created_at, "Driver": volume.driver,
        "Labels": dict(volume.labels) or None, "Mountpoint": volume.mountpoint,
        "Name": volume.name, "Options": dict(volume.options) or None,
        "Scope": volume.scope or "local",
    }
    if usage:
        out["UsageData"] = {"Size": volume.usage_data.size,
                            "RefCount": volume.usage_data.ref_count}
    return out
