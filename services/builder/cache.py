"""The build cache as users see it: disk usage records and pruning."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from berth.types.v1 import types_pb2
from services.builder.context import ContextCache
from services.builder.peers import Peers
from services.builder.store import CacheRecord, CacheStore
from services.common.errors import InvalidArgument
from services.common.events import EventBus

_UNITS = {"s": 1, "m": 60, "h": 3600}


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def parse_until(value: str, now: float) -> float:
    """`until` filter: a duration back from now (10m, 24h) or unix seconds."""
    if value and value[-1] in _UNITS:
        try:
            return now - float(value[:-1]) * _UNITS[value[-1]]
        except ValueError:
            pass
    try:
        return float(value)
    except ValueError as exc:
        raise InvalidArgument(f"invalid filter 'until={value}'") from exc


@dataclass
class RecordView:
    key: str
    parent: str
    description: str
    size: int
    usage_count: int
    created_at_rfc3339: str
    last_used_at_rfc3339: str


class BuildCache:
    def __init__(self, store: CacheStore, peers: Peers, events: EventBus,
                 contexts: ContextCache) -> None:
        self.store = store
        self.peers = peers
        self.events = events
        self.contexts = contexts

    def records(self) -> list[RecordView]:
        return [RecordView(key=r.key, parent=r.parent, description=r.description, size=r.size,
                           usage_count=r.usage_count,
                           created_at_rfc3339=rfc3339(r.created_at),
                           last_used_at_rfc3339=rfc3339(r.last_used_at))
                for r in self.store.all()]

    def _candidates(self, keep_storage: int,
                    filters: dict[str, types_pb2.StringList]) -> list[CacheRecord]:
        records = self.store.all()
        now = time.time()
        for value in filters.get("until", types_pb2.StringList()).values:
            cutoff = parse_until(value, now)
            records = [r for r in records if r.last_used_at < cutoff]
        if keep_storage > 0:
            kept, chosen = 0, []
            for record in sorted(records, key=lambda r: r.last_used_at, reverse=True):
                if kept + record.size <= keep_storage:
                    kept += record.size
                else:
                    chosen.append(record)
            records = chosen
        return records

    async def prune(self, all_records: bool, keep_storage: int,
                    filters: dict[str, types_pb2.StringList]) -> tuple[list[str], int]:
        """Forget cache records and remove the images only they kept; the
        contexts kept for rebuilds go too."""
        self.contexts.clear()
        deleted, reclaimed = [], 0
        for record in reversed(self._candidates(keep_storage, filters)):
            self.store.forget(record.key)
            deleted.append(record.key)
            if await self.peers.remove_untagged_image(record.image_id):
                reclaimed += record.size
        self.events.publish("prune", "", {"reclaimed": str(reclaimed)})
        return deleted, reclaimed
