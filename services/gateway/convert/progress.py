"""Docker's JSONMessage lines (pull, push, load, import, build) from the
services' Progress messages."""

from __future__ import annotations

from typing import Any

from berth.types.v1 import types_pb2


def progress_to_json(message: types_pb2.Progress) -> dict[str, Any]:
    """Docker's JSONMessage from a Progress message."""
    out: dict[str, Any] = {}
    if message.error:
        return {"errorDetail": {"message": message.error}, "error": message.error}
    if message.stream:
        out["stream"] = message.stream
    if message.status:
        out["status"] = message.status
    if message.id:
        out["id"] = message.id
    if message.total or message.current:
        out["progressDetail"] = {"current": message.current, "total": message.total}
    elif message.status:
        out["progressDetail"] = {}
    if message.progress:
        out["progress"] = message.progress
    if message.HasField("aux"):
        aux = message.aux
        out["aux"] = ({"ID": aux.id} if aux.id and not aux.digest
                      else {"Tag": aux.tag, "Digest": aux.digest, "Size": aux.size})
    return out
