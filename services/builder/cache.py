"""The build cache as users see it: disk usage records and pruning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.builder.context import ContextCache
from services.builder.peers import Peers
from services.builder.store import CacheRecord, CacheStore
from services.common import goregexp
from services.common.errors import InvalidArgument
from services.common.events import EventBus
from services.common.filters import Filters

# Keys moby's build-cache prune takes. Records carry no labels: `label`
# selects none of them, `label!` all.
PRUNE_FILTERS = {"until", "unused-for", "label", "label!", "id", "parent", "type",
                 "description", "inuse", "shared", "private"}
RECORD_TYPE = "regular"


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RecordView:
    record: CacheRecord
    in_use: bool
    shared: bool
    type: str = RECORD_TYPE

    @property
    def created_at_rfc3339(self) -> str:
        return rfc3339(self.record.created_at)

    @property
    def last_used_at_rfc3339(self) -> str:
        return rfc3339(self.record.last_used_at)


RecordTest = Callable[[RecordView], bool]


def prune_selection(filters: Filters, now_ns: int | None = None) -> RecordTest:
    """Which records a prune with these filters takes, as BuildKit selects
    them for `docker builder prune --filter`."""
    filters.checked(PRUNE_FILTERS)
    tests = [_unused_since(filters, now_ns), lambda view: filters.match_labels({})]
    for key, field in _TEXT_FIELDS.items():
        if key in filters:
            tests.append(_text_test(key, filters.one(key), field))
    for key, flag in _FLAG_FIELDS.items():
        if key in filters:
            tests.append(_flag_test(filters, key, flag))
    return lambda view: all(test(view) for test in tests)


def _unused_since(filters: Filters, now_ns: int | None) -> RecordTest:
    """`until` (or its old name `unused-for`): last used at or before then."""
    if "until" in filters and "unused-for" in filters:
        raise InvalidArgument('conflicting filters: "until" and "unused-for"')
    key = "unused-for" if "unused-for" in filters else "until"
    value = filters.one(key)
    if value is None:
        return lambda view: True
    cutoff = Filters.time_ns(key, value, now_ns) / 1e9
    return lambda view: view.record.last_used_at <= cutoff


_TEXT_FIELDS: dict[str, Callable[[RecordView], str]] = {
    "id": lambda view: view.record.key,
    "parent": lambda view: view.record.parent,
    "type": lambda view: view.type,
    "description": lambda view: view.record.description,
}
_FLAG_FIELDS: dict[str, Callable[[RecordView], bool]] = {
    "inuse": lambda view: view.in_use,
    "shared": lambda view: view.shared,
    "private": lambda view: not view.shared,
}


def _text_test(key: str, value: str | None, field: Callable[[RecordView], str]) -> RecordTest:
    """No value: the field is set; `id`: a regular expression found in the
    ID; otherwise the same text."""
    if not value:
        return lambda view: field(view) != ""
    if key != "id":
        return lambda view: field(view) == value
    try:
        pattern = goregexp.compile(value)
    except goregexp.GoRegexpError as exc:
        raise InvalidArgument(f"invalid filter 'id={value}': {exc}") from exc
    return lambda view: pattern.search(field(view)) is not None


def _flag_test(filters: Filters, key: str, flag: Callable[[RecordView], bool]) -> RecordTest:
    """No value: the record has the property; `true`/`false`: it has it or not."""
    wanted = filters.boolean(key, True) if filters.one(key) else True
    return lambda view: flag(view) == wanted


class BuildCache:
    def __init__(self, store: CacheStore, peers: Peers, events: EventBus,
                 contexts: ContextCache) -> None:
        self.store = store
        self.peers = peers
        self.events = events
        self.contexts = contexts

    async def records(self) -> list[RecordView]:
        """Every record, with whether an image in use or a tag holds it."""
        usage = await self.peers.image_usage()
        return [RecordView(record=r, in_use=r.image_id in usage.in_use,
                           shared=r.image_id in usage.kept_by_tags)
                for r in self.store.all()]

    async def _candidates(self, all_records: bool, keep_storage: int,
                          filters: Filters) -> list[CacheRecord]:
        """What a prune takes: records not in use that the filters select;
        without `all`, only those no tag keeps (BuildKit's shared records
        stay); with `keep_storage`, the least recently used beyond it."""
        selected = prune_selection(filters)
        records = [view.record for view in await self.records()
                   if not view.in_use and (all_records or not view.shared) and selected(view)]
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
                    filters: Filters) -> tuple[list[str], int]:
        """Forget cache records and remove the images only they kept; the
        contexts kept for rebuilds go too."""
        candidates = await self._candidates(all_records, keep_storage, filters)
        self.contexts.clear()
        deleted, reclaimed = [], 0
        for record in reversed(candidates):
            self.store.forget(record.key)
            deleted.append(record.key)
            if await self.peers.remove_untagged_image(record.image_id):
                reclaimed += record.size
        self.events.publish("prune", "", {"reclaimed": str(reclaimed)})
        return deleted, reclaimed
