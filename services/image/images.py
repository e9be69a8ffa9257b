"""Local images: records keyed by config digest, references, removal with
Docker's conflict rules, rootfs leases and garbage collection of layers."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import shutil
import tarfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from services.common import godur
from services.common.errors import Conflict, Internal, InvalidArgument, NotFound
from services.common.events import EventBus
from services.image import archive, metrics, reference
from services.image.content import ContentStore
from services.image.layers import LayerDirs, Unpacked, chain_ids, decompressed
from services.image.progress import Message, short
from services.image.reference import ImageRef
from services.image.store import ImageRow, ImageStore, LayerBlob

LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


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
    containers: int
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
class DeleteItem:
    untagged: str = ""
    deleted: str = ""


@dataclass
class HistoryEntry:
    id: str
    created: float
    created_by: str
    tags: list[str]
    size: int
    comment: str


@dataclass
class LayerSource:
    """How to get one layer in: its expected diff ID and an opener of its blob."""

    diff_id: str
    open: Callable[[], IO[bytes]] | None = None
    media_type: str = LAYER_TAR
    blob_digest: str = ""  # set when the blob is already in the content store


class Images:
    def __init__(self, root: Path, events: EventBus) -> None:
        self.store = ImageStore(root / "state.db")
        self.content = ContentStore(root)
        self.layers = LayerDirs(root)
        self.events = events
        self._configs: dict[str, dict[str, Any]] = {}
        self._pinned: Counter[str] = Counter()
        self._pin_lock = threading.Lock()  # worker threads pin what they write
        self._layer_locks: dict[str, asyncio.Lock] = {}

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
        return ImageRecord(id=image_id, config=self.config(image_id), row=row,
                           refs=self.store.refs_of(image_id),
                           containers=len(self.store.lease_holders(image_id)))

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
    def list(self, filters: dict[str, list[str]], show_all: bool = False,
             shared_size: bool = False) -> list[ImageRecord]:
        refs = self.store.all_refs()
        leases = self.store.lease_counts()
        with_children = {row.parent for row in self.store.images() if row.parent}
        records = [ImageRecord(id=row.id, config=self.config(row.id), row=row,
                               refs=refs.get(row.id, []), containers=leases.get(row.id, 0))
                   for row in self.store.images()]
        if shared_size:
            self._compute_shared_sizes(records)
        bounds = self._time_bounds(filters)
        result = []
        for record in records:
            if not show_all and not record.refs and record.id in with_children:
                continue
            if self._matches(record, filters, bounds):
                result.append(record)
        return result

    def _compute_shared_sizes(self, records: list[ImageRecord]) -> None:
        sizes = {row["chain_id"]: row["size"] for row in self.store.layers()}
        chains = {r.id: set(chain_ids(r.diff_ids)) for r in records}
        users = Counter(chain for used in chains.values() for chain in used)
        for record in records:
            record.shared_size = sum(sizes.get(c, 0) for c in chains[record.id]
                                     if users[c] > 1)

    def _time_bounds(self, filters: dict[str, list[str]]) -> tuple[float, float]:
        def created_of(name: str) -> float:
            return created_seconds(self.config(self.resolve(name)))
        after = max((created_of(v) for v in filters.get("since", [])), default=float("-inf"))
        before = min((created_of(v) for v in filters.get("before", [])), default=float("inf"))
        return after, before

    @staticmethod
    def _matches(record: ImageRecord, filters: dict[str, list[str]],
                 bounds: tuple[float, float]) -> bool:
        for key in filters:
            if key not in ("dangling", "reference", "label", "before", "since", "until"):
                raise InvalidArgument(f"invalid filter '{key}'")
        dangling = filters.get("dangling")
        if dangling:
            wanted = dangling[-1].lower() in ("true", "1")
            if wanted != (not record.repo_tags):
                return False
        patterns = filters.get("reference")
        if patterns:
            # As dockerd: only the matching references are shown.
            record.refs = [r for r in record.refs
                           if any(_reference_matches(r, p) for p in patterns)]
            if not record.refs:
                return False
        labels = filters.get("label")
        if labels and not all(_label_matches(record.labels, expr) for expr in labels):
            return False
        created = created_seconds(record.config)
        if not bounds[0] < created < bounds[1]:
            return False
        until = filters.get("until")
        return not (until and created >= min(parse_timestamp(u) for u in until))

    # Tags.
    def tag(self, source: str, target: ImageRef) -> str:
        if target.digest:
            raise InvalidArgument("refusing to create a tag with a digest reference")
        image_id = self.resolve(source)
        self.set_reference(target, image_id)
        self.store.set_last_tag_time(image_id, now_rfc3339())
        self.events.publish("tag", image_id, self._event_attrs(image_id, target.familiar))
        return image_id

    def set_reference(self, ref: ImageRef, image_id: str) -> str | None:
        return self.store.set_ref(str(ref), image_id)

    def _event_attrs(self, image_id: str, name: str) -> dict[str, str]:
        attrs = dict(self.config(image_id).get("config", {}).get("Labels") or {})
        attrs["name"] = name
        return attrs

    # Removal, as moby's image_delete.go decides it.
    def remove(self, name: str, force: bool, prune: bool,
               running: set[str] = frozenset()) -> list[DeleteItem]:
        """`running`: IDs of the running containers; an image one of them
        uses is never deleted (untagging it by name still works)."""
        image_id = self.resolve(name)
        records: list[DeleteItem] = []
        refs = self.store.refs_of(image_id)
        by_reference = not _is_id_prefix(image_id, name)
        if by_reference:
            ref = reference.parse(name)
            holders = self.store.lease_holders(image_id)
            if not force and _single_repository(refs) and holders:
                raise Conflict(
                    f'conflict: unable to remove repository reference "{name}" (must force) - '
                    f"container {holders[0][:12]} is using its referenced image "
                    f"{short_id(image_id)}")
            self._untag(image_id, str(ref), records)
            remaining = self.store.refs_of(image_id)
            if not ref.digest and not any(
                    "@" not in r and reference.parse(r).name == ref.name for r in remaining):
                for other in remaining:
                    if "@" in other and reference.parse(other).name == ref.name:
                        self._untag(image_id, other, records)
            if self.store.refs_of(image_id) or self._running_user(image_id, running):
                return records   # a running container's image stays, now untagged
        elif _single_repository(refs):
            self._check_conflicts(image_id, force, running, ignore_references=True)
            for ref_text in refs:
                self._untag(image_id, ref_text, records)
        self._delete(image_id, force, prune, records, running)
        self.collect_garbage(records)
        return records

    def _untag(self, image_id: str, ref_text: str, records: list[DeleteItem]) -> None:
        self.store.delete_ref(ref_text)
        records.append(DeleteItem(untagged=reference.parse(ref_text).familiar))
        self.events.publish("untag", image_id, self._event_attrs(image_id, image_id))

    def _running_user(self, image_id: str, running: set[str]) -> str | None:
        return next((h for h in self.store.lease_holders(image_id) if h in running), None)

    def _check_conflicts(self, image_id: str, force: bool, running: set[str],
                         ignore_references: bool = False) -> None:
        short = short_id(image_id)
        if self.store.children(image_id):
            raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - "
                           f"image has dependent child images")
        if user := self._running_user(image_id, running):
            raise Conflict(f"conflict: unable to delete {short} (cannot be forced) - "
                           f"image is being used by running container {user[:12]}")
        if force:
            return
        if not ignore_references and self.store.refs_of(image_id):
            raise Conflict(f"conflict: unable to delete {short} (must be forced) - "
                           f"image is referenced in multiple repositories")
        holders = self.store.lease_holders(image_id)
        if holders:
            raise Conflict(f"conflict: unable to delete {short} (must be forced) - "
                           f"image is being used by stopped container {holders[0][:12]}")

    def _delete(self, image_id: str, force: bool, prune: bool,
                records: list[DeleteItem], running: set[str]) -> None:
        self._check_conflicts(image_id, force, running)
        row = self.store.image(image_id)
        for ref_text in self.store.refs_of(image_id):
            self._untag(image_id, ref_text, records)
        self.events.publish("delete", image_id, self._event_attrs(image_id, image_id))
        self.store.delete_image(image_id)
        self._configs.pop(image_id, None)
        records.append(DeleteItem(deleted=image_id))
        parent = row.parent if row else ""
        if prune and parent and self.store.image(parent) and self._prunable(parent):
            self._delete(parent, False, True, records, running)

    def _prunable(self, image_id: str) -> bool:
        return not (self.store.refs_of(image_id) or self.store.children(image_id)
                    or self.store.lease_holders(image_id))

    # History and prune.
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

    def prune(self, filters: dict[str, list[str]]) -> tuple[list[DeleteItem], int]:
        """Remove unused images: dangling ones, or all unused with dangling=false."""
        for key in filters:
            if key not in ("dangling", "label", "label!", "until"):
                raise InvalidArgument(f"invalid filter '{key}'")
        only_dangling = (filters.get("dangling") or ["true"])[-1].lower() in ("true", "1")
        sizes_before = {r["chain_id"]: r["size"] for r in self.store.layers()}
        records: list[DeleteItem] = []
        changed = True
        while changed:
            changed = False
            for row in self.store.images():
                if self._prune_candidate(row.id, filters, only_dangling):
                    self._delete(row.id, True, False, records, set())
                    changed = True
        removed = self.collect_garbage(records)
        return records, sum(sizes_before.get(chain, 0) for chain in removed)

    def _prune_candidate(self, image_id: str, filters: dict[str, list[str]],
                         only_dangling: bool) -> bool:
        refs = self.store.refs_of(image_id)
        if only_dangling and any("@" not in r for r in refs):
            return False
        if self.store.children(image_id) or self.store.lease_holders(image_id):
            return False
        config = self.config(image_id)
        labels = (config.get("config") or {}).get("Labels") or {}
        if not all(_label_matches(labels, e) for e in filters.get("label", [])):
            return False
        if any(_label_matches(labels, e) for e in filters.get("label!", [])):
            return False
        until = filters.get("until")
        return not (until and created_seconds(config) >= min(map(parse_timestamp, until)))

    # Garbage collection of layers and blobs nobody uses any more.
    def collect_garbage(self, records: list[DeleteItem] | None = None) -> list[str]:
        with self._pin_lock:
            pinned = set(self._pinned)
        used_chains: set[str] = set(pinned)
        used_blobs: set[str] = set()
        for row in self.store.images():
            used_blobs.add(row.id)
            used_chains.update(chain_ids(self.record_diff_ids(row.id)))
        parents = {r["chain_id"]: r["parent"] for r in self.store.layers()}
        for chain in self.store.leased_chains():
            while chain:
                used_chains.add(chain)
                chain = parents.get(chain, "")
        removed = []
        for row in self.store.layers():
            if row["chain_id"] not in used_chains:
                self.store.delete_layer(row["chain_id"])
                self.layers.remove(row["chain_id"])
                removed.append(row["chain_id"])
                if records is not None:
                    records.append(DeleteItem(deleted=row["chain_id"]))
        used_diffs = {r["diff_id"] for r in self.store.layers()}
        for blob in self.store.all_layer_blobs():
            if blob.diff_id in used_diffs:
                used_blobs.add(blob.digest)
            else:
                self.store.delete_layer_blobs(blob.diff_id)
        for digest in self.content.digests():
            if digest not in used_blobs and digest not in pinned:
                self.content.delete(digest)
                self.store.delete_blob_sources(digest)
        self.refresh_metrics()
        return removed

    def record_diff_ids(self, image_id: str) -> list[str]:
        return list((self.config(image_id).get("rootfs") or {}).get("diff_ids") or [])

    # Rootfs leases.
    def acquire(self, name: str, holder: str) -> tuple[ImageRecord, list[str]]:
        image_id = self.resolve(name)
        chains = chain_ids(self.record_diff_ids(image_id))
        self.store.add_lease(holder, image_id, chains[-1] if chains else "")
        lower = [str(self.layers.path(c)) for c in reversed(chains)] or [str(self.layers.empty)]
        return self.record(image_id), lower

    def release(self, holder: str) -> None:
        if self.store.delete_lease(holder):
            self.collect_garbage()

    # Adding images.
    def pin(self, *keys: str) -> None:
        """Keep layers/blobs being added safe from garbage collection."""
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

    def store_tar(self, path: Path) -> str:
        """Store the uncompressed form of a (maybe compressed) tar; returns its
        digest, pinned for the caller to unpin (runs in a thread)."""
        with path.open("rb") as raw, self.content.writer() as writer:
            shutil.copyfileobj(decompressed(raw), writer, 1 << 20)
            self.pin(writer.digest)
        return writer.digest

    async def add_layer(self, source: LayerSource, chain: str, parent: str) -> None:
        lock = self._layer_locks.setdefault(chain, asyncio.Lock())
        async with lock:
            if self.store.layer(chain) is None:
                known = {blob.digest for blob in self.store.all_layer_blobs()}
                digest, size, unpacked = await asyncio.to_thread(self._ingest, source, chain,
                                                                 known)
                try:
                    self.store.add_layer_blob(LayerBlob(source.diff_id, digest,
                                                        source.media_type, size))
                    self.store.add_layer(chain, source.diff_id, parent, unpacked.size)
                finally:
                    self.unpin(digest)
        self._layer_locks.pop(chain, None)

    def _ingest(self, source: LayerSource, chain: str,
                known_blobs: set[str]) -> tuple[str, int, Unpacked]:
        """Store the blob, unpack it, verify the diff ID (runs in a thread).
        The blob comes back pinned for the caller to unpin once recorded."""
        if source.blob_digest:
            digest = source.blob_digest
            size = self.content.path(digest).stat().st_size
            self.pin(digest)
        else:
            if source.open is None:
                raise Internal(f"no content for layer {source.diff_id}")
            with source.open() as stream, self.content.writer() as writer:
                shutil.copyfileobj(stream, writer, 1 << 20)
                self.pin(writer.digest)
            digest, size = writer.digest, writer.size
        try:
            with self.content.path(digest).open("rb") as blob:
                unpacked = self.layers.unpack(blob, chain, source.diff_id)
        except BaseException:
            self.unpin(digest)
            if digest not in known_blobs:
                self.content.delete(digest)
            raise
        return digest, size, unpacked

    def register(self, config_bytes: bytes, parent: str = "") -> str:
        """Record an image whose layers are all present; returns its ID."""
        try:
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise InvalidArgument(f"invalid image config: {exc}") from exc
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        size = 0
        for chain in chain_ids(diff_ids):
            layer = self.store.layer(chain)
            if layer is None:
                raise InvalidArgument(f"layer {chain} is missing")
            size += layer["size"]
        image_id = self.content.put(config_bytes)
        self.store.add_image(image_id, parent, size)
        self.refresh_metrics()
        return image_id

    # docker load.
    async def load(self, tar_path: Path, quiet: bool) -> AsyncIterator[Message]:
        """Load every image of an archive, with Docker's output lines."""
        tar = await asyncio.to_thread(tarfile.open, tar_path)
        try:
            try:
                found = await asyncio.to_thread(archive.read_archive, tar)
            except tarfile.TarError as exc:
                raise InvalidArgument(f"invalid archive: {exc}") from exc
            for image in found:
                async for message in self._load_one(tar, image, quiet):
                    yield message
        finally:
            tar.close()

    async def _load_one(self, tar: tarfile.TarFile, image: archive.ArchivedImage,
                        quiet: bool) -> AsyncIterator[Message]:
        config = json.loads(image.config)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(image.layer_members):
            raise InvalidArgument("invalid archive: layer count does not match the config")
        refs = [reference.parse(tag) for tag in image.repo_tags]
        chains = chain_ids(diff_ids)
        try:
            with self.pinned(*chains):
                for i, (diff_id, member) in enumerate(zip(diff_ids, image.layer_members,
                                                          strict=True)):
                    source = LayerSource(diff_id=diff_id, open=_opener(tar, member))
                    await self.add_layer(source, chains[i], chains[i - 1] if i else "")
                    if not quiet:
                        size = self.store.layer(chains[i])["size"]
                        yield Message("Loading layer", id=short(diff_id), current=size,
                                      total=size)
                image_id = self.register(image.config)
        except BaseException:
            self.collect_garbage()
            raise
        for ref in refs:
            previous = self.set_reference(ref, image_id)
            if previous and previous != image_id:
                yield Message(stream=f"The image {ref.familiar} already exists, renaming the "
                                     f"old one with ID {previous} to empty string\n")
        self.events.publish("load", image_id, self._event_attrs(image_id, image_id))
        for line in [f"Loaded image: {ref.familiar}" for ref in refs] or [
                f"Loaded image ID: {image_id}"]:
            yield Message(stream=line + "\n")


def _opener(tar: tarfile.TarFile, member: str) -> Callable[[], IO[bytes]]:
    return lambda: archive.open_member(tar, member)


def _is_id_prefix(image_id: str, name: str) -> bool:
    return reference.looks_like_id(name) and image_id.removeprefix("sha256:").startswith(
        name.removeprefix("sha256:"))


def _single_repository(refs: list[str]) -> bool:
    """At most one tag, and every reference within one repository."""
    tags = [r for r in refs if "@" not in r]
    names = {reference.parse(r).name for r in refs}
    return len(tags) <= 1 and len(names) <= 1


def _reference_matches(ref_text: str, pattern: str) -> bool:
    ref = reference.parse(ref_text)
    candidates = (ref.familiar_name, ref.familiar, ref.name, str(ref))
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


def _label_matches(labels: dict[str, str], expr: str) -> bool:
    key, sep, value = expr.partition("=")
    if key not in labels:
        return False
    return not sep or labels[key] == value


def created_seconds(config: dict[str, Any]) -> float:
    created = config.get("created")
    return parse_timestamp(created) if created else 0.0


def parse_timestamp(text: str) -> float:
    """A Go duration before now (`24h`, `1h30m`), unix seconds, or RFC 3339,
    as Docker's `until`/`since` filters accept them."""
    if godur.is_duration(text):
        return time.time() - godur.parse_ns(text) / 1e9
    try:
        return float(text)
    except ValueError:
        pass
    main, _, rest = text.partition(".")
    zone = ""
    if rest:
        digits = rest.rstrip("Z")
        for sign in "+-":
            if sign in digits:
                digits, _, zone = digits.partition(sign)
                zone = sign + zone
        fraction = float("0." + (digits or "0"))
    else:
        fraction = 0.0
        if main.endswith("Z"):
            main = main[:-1]
        elif len(main) > 19:
            main, zone = main[:19], main[19:]
    if rest.endswith("Z") or not zone:
        zone = "+00:00"
    try:
        parsed = datetime.fromisoformat(main.rstrip("Z") + zone)
    except ValueError as exc:
        raise InvalidArgument(f"invalid timestamp: {text}") from exc
    return parsed.timestamp() + fraction
