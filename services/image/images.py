"""The local image catalogue: records keyed by config digest, lookup,
listing, tags, history, rootfs leases and pins. Removal and garbage
collection are in removal.py, adding images in ingest.py."""

from __future__ import annotations

import fnmatch
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common import owners
from services.common.errors import InvalidArgument, NotFound
from services.common.events import EventBus
from services.common.filters import Filters, timestamp_ns
from services.image import metrics, reference
from services.image.content import ContentStore
from services.image.layers import LayerDirs, chain_ids
from services.image.reference import ImageRef
from services.image.store import ImageRow, ImageStore

LIST_FILTERS = {"dangling", "reference", "label", "before", "since", "until"}


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


@dataclass
class ImageRecord:
    id: str
    config: dict[str, Any]
    row: ImageRow
    refs: list[str]
    containers: int   # the containers made from it (their rootfs leases)
    holds: int        # leases of every owner: containers, builds, CRI image volumes
    shared_size: int = -1  # bytes of layers other images use too; -1: not computed

    @property
    def diff_ids(self) -> list[str]:
        return list((self.config.get("rootfs") or {}).get("diff_ids") or [])

    @property
    def repo_tags(self) -> list[str]:
        return [reference.parse(r).familiar for r in self.refs if "@" not in r]

    @property
    def repo_digests(self) -> list[str]:
        return [reference.parse(r).familiar for r in self.refs if "@" in r]

    @property
    def labels(self) -> dict[str, str]:
        return (self.config.get("config") or {}).get("Labels") or {}


@dataclass
class HistoryEntry:
    id: str
    created: float
    created_by: str
    tags: list[str]
    size: int
    comment: str


class Images:
    def __init__(self, root: Path, events: EventBus) -> None:
        self.store = ImageStore(root / "state.db")
        self.content = ContentStore(root)
        self.layers = LayerDirs(root)
        self.events = events
        self._configs: dict[str, dict[str, Any]] = {}
        self._pinned: Counter[str] = Counter()
        self._pin_lock = threading.Lock()  # worker threads pin what they write

    # Lookup.
    def config(self, image_id: str) -> dict[str, Any]:
        if image_id not in self._configs:
            self._configs[image_id] = json.loads(self.content.read(image_id))
        return self._configs[image_id]

    def resolve(self, name: str) -> str:
        """Image ID of a full ID, a reference, or an unambiguous ID prefix."""
        if name.startswith("sha256:") and len(name) == 71:
            if self.store.image(name):
                return name
            raise NotFound(f"No such image: {name}")
        ref: ImageRef | None = None
        try:
            ref = reference.parse(name)
        except InvalidArgument:
            if not reference.looks_like_id(name):
                raise
        if ref is not None:
            image_id = self.store.resolve_ref(str(ref))
            if image_id:
                return image_id
        if reference.looks_like_id(name):
            matches = self.store.images_with_prefix("sha256:" + name.removeprefix("sha256:"))
            if len(matches) == 1:
                return matches[0]
        raise NotFound(f"No such image: {ref.familiar if ref else name}")

    def record(self, image_id: str) -> ImageRecord:
        row = self.store.image(image_id)
        if row is None:
            raise NotFound(f"No such image: {image_id}")
        owners_of_leases = [owner for _, owner in self.store.leases_of(image_id)]
        return ImageRecord(id=image_id, config=self.config(image_id), row=row,
                           refs=self.store.refs_of(image_id),
                           containers=owners_of_leases.count(owners.CONTAINER),
                           holds=len(owners_of_leases))

    def inspect(self, name: str) -> ImageRecord:
        return self.record(self.resolve(name))

    def count(self) -> int:
        return self.store.count_images()

    def layer_bytes(self) -> int:
        """Bytes of every unpacked layer, each counted once however shared."""
        return sum(row["size"] for row in self.store.layers())

    def refresh_metrics(self) -> None:
        metrics.IMAGES.set(self.count())
        metrics.LAYER_BYTES.set(self.layer_bytes())

    # Listing.
    def list(self, filters: Filters, show_all: bool = False,
             shared_size: bool = False) -> list[ImageRecord]:
        filters.checked(LIST_FILTERS)
        dangling = filters.flag("dangling")
        refs = self.store.all_refs()
        holds = self.store.lease_counts()
        containers = self.store.lease_counts(owners.CONTAINER)
        with_children = {row.parent for row in self.store.images() if row.parent}
        records = [ImageRecord(id=row.id, config=self.config(row.id), row=row,
                               refs=refs.get(row.id, []), containers=containers.get(row.id, 0),
                               holds=holds.get(row.id, 0))
                   for row in self.store.images()]
        if shared_size:
            self._compute_shared_sizes(records)
        bounds = self._time_bounds(filters)
        result = []
        for record in records:
            if not show_all and not record.refs and record.id in with_children:
                continue
            if self._matches(record, filters, dangling, bounds):
                result.append(record)
        return result

    def _compute_shared_sizes(self, records: list[ImageRecord]) -> None:
        sizes = {row["chain_id"]: row["size"] for row in self.store.layers()}
        chains = {r.id: set(chain_ids(r.diff_ids)) for r in records}
        users = Counter(chain for used in chains.values() for chain in used)
        for record in records:
            record.shared_size = sum(sizes.get(c, 0) for c in chains[record.id]
                                     if users[c] > 1)

    def _time_bounds(self, filters: Filters) -> tuple[float, float]:
        """Created strictly after every `since` image and before every
        `before` image and `until` time, in nanoseconds."""
        def created_of(name: str) -> int:
            return created_ns(self.config(self.resolve(name)))
        after = max((created_of(v) for v in filters.get("since")), default=-math.inf)
        before = min([created_of(v) for v in filters.get("before")]
                     + [Filters.time_ns("until", v) for v in filters.get("until")],
                     default=math.inf)
        return after, before

    @staticmethod
    def _matches(record: ImageRecord, filters: Filters, dangling: bool | None,
                 bounds: tuple[float, float]) -> bool:
        if dangling is not None and dangling != (not record.repo_tags):
            return False
        patterns = filters.get("reference")
        if patterns:
            # As dockerd: only the matching references are shown.
            record.refs = [r for r in record.refs
                           if any(_reference_matches(r, p) for p in patterns)]
            if not record.refs:
                return False
        if not filters.match_labels(record.labels):
            return False
        return bounds[0] < created_ns(record.config) < bounds[1]

    # Tags.
    def tag(self, source: str, target: ImageRef) -> str:
        if target.digest:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        image_id = self.resolve(source)
        self.set_reference(target, image_id)
        self.store.set_last_tag_time(image_id, now_rfc3339())
        self.events.publish("tag", image_id, self.event_attrs(image_id, target.familiar))
        return image_id

    def set_reference(self, ref: ImageRef, image_id: str) -> str | None:
        return self.store.set_ref(str(ref), image_id)

    def event_attrs(self, image_id: str, name: str) -> dict[str, str]:
        attrs = dict(self.config(image_id).get("config", {}).get("Labels") or {})
        attrs["name"] = name
        return attrs

    # History.
    def history(self, name: str) -> list[HistoryEntry]:
        """Newest first; entries that are local images carry their ID and tags."""
        image_id = self.resolve(name)
        steps = list(self.config(image_id).get("history") or [])
        owners: dict[int, str] = {}
        current: str | None = image_id
        while current and self.store.image(current):
            owners.setdefault(len(self.config(current).get("history") or []) - 1, current)
            current = self.store.image(current).parent
        sizes = {r["chain_id"]: r["size"] for r in self.store.layers()}
        chains = iter(chain_ids(self.record_diff_ids(image_id)))
        entries = []
        for index, step in enumerate(steps):
            size = 0 if step.get("empty_layer") else sizes.get(next(chains, ""), 0)
            owner = owners.get(index, "")
            tags = [reference.parse(r).familiar for r in self.store.refs_of(owner)
                    if "@" not in r] if owner else []
            entries.append(HistoryEntry(
                id=owner or "<missing>", created=created_seconds(step),
                created_by=step.get("created_by", ""), tags=tags, size=size,
                comment=step.get("comment", "")))
        return entries[::-1]

    def record_diff_ids(self, image_id: str) -> list[str]:
        return list((self.config(image_id).get("rootfs") or {}).get("diff_ids") or [])

    # Rootfs leases.
    def acquire(self, name: str, holder: str, owner: str) -> tuple[ImageRecord, list[str]]:
        image_id = self.resolve(name)
        chains = chain_ids(self.record_diff_ids(image_id))
        self._add_lease(holder, image_id, chains, owner)
        lower = [str(self.layers.path(c)) for c in reversed(chains)] or [str(self.layers.empty)]
        return self.record(image_id), lower

    def hold(self, image_id: str, holder: str, owner: str) -> None:
        """A rootfs lease on an image a call just made or found; nothing
        when no holder is named."""
        if holder:
            self._add_lease(holder, image_id, chain_ids(self.record_diff_ids(image_id)), owner)

    def _add_lease(self, holder: str, image_id: str, chains: list[str], owner: str) -> None:
        self.store.add_lease(holder, image_id, chains[-1] if chains else "", owner)

    # Pins: what is being added or exported, safe from garbage collection.
    def pin(self, *keys: str) -> None:
        with self._pin_lock:
            self._pinned.update(keys)

    def unpin(self, *keys: str) -> None:
        with self._pin_lock:
            self._pinned.subtract(keys)
            self._pinned += Counter()

    @contextmanager
    def pinned(self, *keys: str) -> Iterator[None]:
        self.pin(*keys)
        try:
            yield
        finally:
            self.unpin(*keys)

    def pinned_keys(self) -> set[str]:
        with self._pin_lock:
            return set(self._pinned)

    def forget(self, image_id: str) -> None:
        """Drop the cached config of a deleted image."""
        self._configs.pop(image_id, None)


def _reference_matches(ref_text: str, pattern: str) -> bool:
    ref = reference.parse(ref_text)
    candidates = (ref.familiar_name, ref.familiar, ref.name, str(ref))
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def created_ns(config: dict[str, Any]) -> int:
    created = config.get("created")
    return timestamp_ns(created) if created else 0


def created_seconds(config: dict[str, Any]) -> float:
    return created_ns(config) / 1e9
