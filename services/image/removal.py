"""Taking images away: removal with Docker's conflict rules (as moby's
image_delete.go decides them), prune, lease release, and garbage
collection of the layers and blobs nobody uses any more."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.common import owners
from services.common.errors import Conflict
from services.common.filters import Filters
from services.image import reference
from services.image.images import Images, created_ns, short_id
from services.image.layers import chain_ids

log = logging.getLogger(__name__)

PRUNE_FILTERS = {"dangling", "label", "label!", "until"}


@dataclass
class DeleteItem:
    untagged: str = ""
    deleted: str = ""


class Removal:
    def __init__(self, images: Images) -> None:
        self.images = images
        self.store = images.store

    def remove(self, name: str, force: bool, prune: bool,
               running: set[str] = frozenset()) -> list[DeleteItem]:
        """`running`: IDs of the running containers; an image one of them
        uses is never deleted (untagging it by name still works)."""
        image_id = self.images.resolve(name)
        records: list[DeleteItem] = []
        refs = self.store.refs_of(image_id)
        by_reference = not _is_id_prefix(image_id, name)
        if by_reference:
            ref = reference.parse(name)
            user = self._user(image_id)
            if not force and _single_repository(refs) and user:
                raise Conflict(
                    f'conflict: unable to remove repository reference "{name}" (must force) - '
                    f"{user} is using its referenced image {short_id(image_id)}")
            self._untag(image_id, str(ref), records)
            remaining = self.store.refs_of(image_id)
            if not ref.digest and not any(
                    "@" not in r and reference.parse(r).name == ref.name for r in remaining):
                for other in remaining:
                    if "@" in other and reference.parse(other).name == ref.name:
                        self._untag(image_id, other, records)
            if self.store.refs_of(image_id) or self._conflict(image_id, force, running):
                # As moby's quiet delete after untagging: the conflict rules
                # only decide whether the untagged image goes too.
                return records
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
        self.images.events.publish("untag", image_id, self.images.event_attrs(image_id, image_id))

    def _running_user(self, image_id: str, running: set[str]) -> str | None:
        """What keeps the image whatever the force, as Docker's messages
        name it: a running container, else a running build (the build
        service's leases, holders build-<build>-<n>: no containers, and like
        a running container's they cannot be forced away)."""
        leases = self.store.leases_of(image_id)
        if container := next((h for h, _ in leases if h in running), None):
            return f"running container {container[:12]}"
        return "running build" if any(o == owners.BUILD for _, o in leases) else None

    def _stopped_containers(self, image_id: str) -> list[str]:
        """The containers using the image (running ones are checked first)."""
        return [h for h, owner in self.store.leases_of(image_id) if owner != owners.BUILD]

    def _user(self, image_id: str) -> str | None:
        """Any user of the image: its first container, else a running build."""
        if containers := self._stopped_containers(image_id):
            return f"container {containers[0][:12]}"
        return "a running build" if self.store.leases_of(image_id) else None

    def _check_conflicts(self, image_id: str, force: bool, running: set[str],
                         ignore_references: bool = False) -> None:
        if conflict := self._conflict(image_id, force, running, ignore_references):
            raise conflict

    def _conflict(self, image_id: str, force: bool, running: set[str],
                  ignore_references: bool = False) -> Conflict | None:
        """What keeps the image from being deleted: the hard conflicts,
        and unless forced the soft ones."""
        short = short_id(image_id)
        if self.store.children(image_id):
            return Conflict(f"conflict: unable to delete {short} (cannot be forced) - "
                            f"image has dependent child images")
        if user := self._running_user(image_id, running):
            return Conflict(f"conflict: unable to delete {short} (cannot be forced) - "
                            f"image is being used by {user}")
        if force:
            return None
        if not ignore_references and self.store.refs_of(image_id):
            return Conflict(f"conflict: unable to delete {short} (must be forced) - "
                            f"image is referenced in multiple repositories")
        if holders := self._stopped_containers(image_id):
            return Conflict(f"conflict: unable to delete {short} (must be forced) - "
                            f"image is being used by stopped container {holders[0][:12]}")
        return None

    def _delete(self, image_id: str, force: bool, prune: bool,
                records: list[DeleteItem], running: set[str]) -> None:
        self._check_conflicts(image_id, force, running)
        row = self.store.image(image_id)
        for ref_text in self.store.refs_of(image_id):
            self._untag(image_id, ref_text, records)
        self.images.events.publish("delete", image_id, self.images.event_attrs(image_id, image_id))
        self.store.delete_image(image_id)
        self.images.forget(image_id)
        records.append(DeleteItem(deleted=image_id))
        parent = row.parent if row else ""
        if prune and parent and self.store.image(parent) and self._prunable(parent):
            self._delete(parent, False, True, records, running)

    def _prunable(self, image_id: str) -> bool:
        return not (self.store.refs_of(image_id) or self.store.children(image_id)
                    or self.store.lease_holders(image_id))

    def prune(self, filters: Filters) -> tuple[list[DeleteItem], int]:
        """Remove unused images: dangling ones, or all unused with dangling=false."""
        only_dangling = filters.checked(PRUNE_FILTERS).boolean("dangling", True)
        until = filters.until_ns()
        sizes_before = {r["chain_id"]: r["size"] for r in self.store.layers()}
        records: list[DeleteItem] = []
        changed = True
        while changed:
            changed = False
            for row in self.store.images():
                if self._prune_candidate(row.id, filters, only_dangling, until):
                    self._delete(row.id, True, False, records, set())
                    changed = True
        removed = self.collect_garbage(records)
        return records, sum(sizes_before.get(chain, 0) for chain in removed)

    def _prune_candidate(self, image_id: str, filters: Filters, only_dangling: bool,
                         until: int | None) -> bool:
        refs = self.store.refs_of(image_id)
        if only_dangling and any("@" not in r for r in refs):
            return False
        if self.store.children(image_id) or self.store.lease_holders(image_id):
            return False
        config = self.images.config(image_id)
        labels = (config.get("config") or {}).get("Labels") or {}
        if not filters.match_labels(labels):
            return False
        return until is None or created_ns(config) < until

    # Garbage collection of layers and blobs nobody uses any more.
    def collect_garbage(self, records: list[DeleteItem] | None = None) -> list[str]:
        pinned = self.images.pinned_keys()
        used_chains: set[str] = set(pinned)
        used_blobs: set[str] = set()
        for row in self.store.images():
            used_blobs.add(row.id)
            used_chains.update(chain_ids(self.images.record_diff_ids(row.id)))
        parents = {r["chain_id"]: r["parent"] for r in self.store.layers()}
        for chain in self.store.leased_chains():
            while chain:
                used_chains.add(chain)
                chain = parents.get(chain, "")
        removed = []
        for row in self.store.layers():
            if row["chain_id"] not in used_chains:
                self.store.delete_layer(row["chain_id"])
                self.images.layers.remove(row["chain_id"])
                removed.append(row["chain_id"])
                if records is not None:
                    records.append(DeleteItem(deleted=row["chain_id"]))
        used_diffs = {r["diff_id"] for r in self.store.layers()}
        for blob in self.store.all_layer_blobs():
            if blob.diff_id in used_diffs:
                used_blobs.add(blob.digest)
            else:
                self.store.delete_layer_blobs(blob.diff_id)
        for digest in self.images.content.digests():
            if digest not in used_blobs and digest not in pinned:
                self.images.content.delete(digest)
                self.store.delete_blob_sources(digest)
        self.images.refresh_metrics()
        return removed

    def release(self, holder: str) -> None:
        """Drop a container's rootfs lease and what only it kept."""
        if self.store.delete_lease(holder):
            self.collect_garbage()

    def release_gone(self, owner: str, holders: set[str], before_ns: int) -> list[str]:
        """Reconcile after a crash: drop `owner`'s leases taken before
        `before_ns` whose holder is not in `holders` (what still exists)."""
        gone = sorted(self.store.holders_of(owner, before_ns) - holders)
        for holder in gone:
            log.warning("dropping the rootfs lease of %s, which no longer exists", holder)
            self.store.delete_lease(holder)
        if gone:
            self.collect_garbage()
        return gone


def _is_id_prefix(image_id: str, name: str) -> bool:
    return reference.looks_like_id(name) and image_id.removeprefix("sha256:").startswith(
        name.removeprefix("sha256:"))


def _single_repository(refs: list[str]) -> bool:
    """At most one tag, and every reference within one repository."""
    tags = [r for r in refs if "@" not in r]
    names = {reference.parse(r).name for r in refs}
    return len(tags) <= 1 and len(names) <= 1
