"""Docker's events JSON from the services' Event messages."""

from __future__ import annotations

from typing import Any

from berth.types.v1 import types_pb2


def event_to_json(event: types_pb2.Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Type": event.type, "Action": event.action,
        "Actor": {"ID": event.actor_id, "Attributes": dict(event.attributes)},
        "scope": event.scope or "local",
        "time": event.time_nano // 1_000_000_000, "timeNano": event.time_nano,
    }
    if event.type in ("container", "image"):
        # The fields Docker still sends for old clients.
        out["status"] = event.action
        out["id"] = event.actor_id
        if "image" in event.attributes:
            out["from"] = event.attributes["image"]
    return out
