"""Docker's BuildCache records (GET /system/df) from the build service's protos."""

from __future__ import annotations

from typing import Any

from berth.build.v1 import build_pb2


def cache_record_json(record: build_pb2.BuildCacheRecord) -> dict[str, Any]:
    return {"ID": record.id, "Parent": record.parent,
            "Parents": [record.parent] if record.parent else [], "Type": record.type,
            "Description": record.description, "InUse": record.in_use,
            "Shared": record.shared, "Size": record.size, "CreatedAt": record.created_at,
            "LastUsedAt": record.last_used_at or None, "UsageCount": record.usage_count}
