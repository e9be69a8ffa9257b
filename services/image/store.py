"""SQLite metadata of the image service: images, references, layers,
registry blob mappings and rootfs leases."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,            -- sha256:<config digest>
    parent TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    added_ns INTEGER NOT NULL,
    last_tag_time TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS refs (
    ref TEXT PRIMARY KEY,           -- canonical name:tag or name@digest
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS refs_by_image ON refs(image_id);
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    parent TEXT NOT NULL,           -- parent chain ID, '' for a base layer
    size INTEGER NOT NULL           -- unpacked bytes
);
CREATE TABLE IF NOT EXISTS layer_blobs (
    diff_id TEXT NOT NULL,
    digest TEXT NOT NULL,           -- blob as stored (maybe compressed)
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (diff_id, digest)
);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    domain TEXT NOT NULL,           -- registry host the blob is known to be in
    repository TEXT NOT NULL,       -- repository path there (cross-repo mounts)
    PRIMARY KEY (digest, domain, repository)
);
CREATE TABLE IF NOT EXISTS leases (
    holder TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,
    chain_id TEXT NOT NULL
);
"""

# Lease columns added for reconciling after a crash. Leases from before are
# containers' unless a build step holds them (holder "build-...").
LEASE_COLUMNS = {
    "owner": ("TEXT NOT NULL DEFAULT ''",
              "UPDATE leases SET owner = CASE WHEN holder LIKE 'build-%' "
              "THEN 'build' ELSE 'container' END"),
    "taken_ns": ("INTEGER NOT NULL DEFAULT 0", ""),
}


@dataclass
class ImageRow:
    id: str
    parent: str
    size: int
    added_ns: int
    last_tag_time: str


@dataclass
class LayerBlob:
    diff_id: str
    digest: str
    media_type: str
    size: int


class ImageStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)
        present = {row["name"] for row in self.db.query("PRAGMA table_info(leases)")}
        for column, (declaration, backfill) in LEASE_COLUMNS.items():
            if column not in present:
                self.db.execute(f"ALTER TABLE leases ADD COLUMN {column} {declaration}")
                if backfill:
                    self.db.execute(backfill)

    # Images.
    def add_image(self, image_id: str, parent: str, size: int) -> bool:
        """Record an image; False when it already exists."""
        try:
            self.db.execute("INSERT INTO images (id, parent, size, added_ns) VALUES (?, ?, ?, ?)",
                            (image_id, parent, size, time.time_ns()))
        except sqlite3.IntegrityError:
            return False
        return True

    def image(self, image_id: str) -> ImageRow | None:
        row = self.db.query_one("SELECT * FROM images WHERE id = ?", (image_id,))
        return ImageRow(**dict(row)) if row else None

    def images(self) -> list[ImageRow]:
        rows = self.db.query("SELECT * FROM images ORDER BY added_ns DESC")
        return [ImageRow(**dict(row)) for row in rows]

    def images_with_prefix(self, prefix: str) -> list[str]:
        rows = self.db.query("SELECT id FROM images WHERE id LIKE ?", (prefix + "%",))
        return [row["id"] for row in rows]

    def children(self, image_id: str) -> list[str]:
        return [r["id"] for r in self.db.query("SELECT id FROM images WHERE parent = ?",
                                                (image_id,))]

    def delete_image(self, image_id: str) -> None:
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def count_images(self) -> int:
        return self.db.query_one("SELECT COUNT(*) AS n FROM images")["n"]

    def set_last_tag_time(self, image_id: str, when: str) -> None:
        self.db.execute("UPDATE images SET last_tag_time = ? WHERE id = ?", (when, image_id))

    # References.
    def set_ref(self, ref: str, image_id: str) -> str | None:
        """Point `ref` at `image_id`; returns the image it pointed at before."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT image_id FROM refs WHERE ref = ?", (ref,)).fetchone()
            conn.execute("INSERT OR REPLACE INTO refs (ref, image_id) VALUES (?, ?)",
                         (ref, image_id))
        return row["image_id"] if row else None

    def resolve_ref(self, ref: str) -> str | None:
        row = self.db.query_one("SELECT image_id FROM refs WHERE ref = ?", (ref,))
        return row["image_id"] if row else None

    def refs_of(self, image_id: str) -> list[str]:
        return [r["ref"] for r in self.db.query(
            "SELECT ref FROM refs WHERE image_id = ? ORDER BY rowid", (image_id,))]

    def all_refs(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for row in self.db.query("SELECT ref, image_id FROM refs ORDER BY rowid"):
            result.setdefault(row["image_id"], []).append(row["ref"])
        return result

    def delete_ref(self, ref: str) -> None:
        self.db.execute("DELETE FROM refs WHERE ref = ?", (ref,))

    # Layers.
    def layer(self, chain_id: str) -> sqlite3.Row | None:
        return self.db.query_one("SELECT * FROM layers WHERE chain_id = ?", (chain_id,))

    def add_layer(self, chain_id: str, diff_id: str, parent: str, size: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO layers VALUES (?, ?, ?, ?)",
                        (chain_id, diff_id, parent, size))

    def layers(self) -> list[sqlite3.Row]:
        return self.db.query("SELECT * FROM layers")

    def delete_layer(self, chain_id: str) -> None:
        self.db.execute("DELETE FROM layers WHERE chain_id = ?", (chain_id,))

    def add_layer_blob(self, blob: LayerBlob) -> None:
        self.db.execute("INSERT OR IGNORE INTO layer_blobs VALUES (?, ?, ?, ?)",
                        (blob.diff_id, blob.digest, blob.media_type, blob.size))

    def layer_blobs(self, diff_id: str) -> list[LayerBlob]:
        rows = self.db.query("SELECT * FROM layer_blobs WHERE diff_id = ? ORDER BY rowid",
                             (diff_id,))
        return [LayerBlob(**dict(row)) for row in rows]

    def all_layer_blobs(self) -> list[LayerBlob]:
        return [LayerBlob(**dict(row)) for row in self.db.query("SELECT * FROM layer_blobs")]

    def delete_layer_blobs(self, diff_id: str) -> None:
        self.db.execute("DELETE FROM layer_blobs WHERE diff_id = ?", (diff_id,))

    # Where blobs are known to live, for cross-repository mounts on push.
    def add_blob_source(self, digest: str, domain: str, repository: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO blob_sources VALUES (?, ?, ?)",
                        (digest, domain, repository))

    def delete_blob_sources(self, digest: str) -> None:
        self.db.execute("DELETE FROM blob_sources WHERE digest = ?", (digest,))

    def blob_sources(self, digest: str, domain: str) -> list[str]:
        rows = self.db.query("SELECT repository FROM blob_sources WHERE digest = ? AND "
                             "domain = ? ORDER BY rowid", (digest, domain))
        return [row["repository"] for row in rows]

    # Leases.
    def add_lease(self, holder: str, image_id: str, chain_id: str, owner: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO leases (holder, image_id, chain_id, owner, "
                        "taken_ns) VALUES (?, ?, ?, ?, ?)",
                        (holder, image_id, chain_id, owner, time.time_ns()))

    def delete_lease(self, holder: str) -> bool:
        return self.db.execute("DELETE FROM leases WHERE holder = ?", (holder,)) > 0

    def holders_of(self, owner: str, taken_before_ns: int) -> set[str]:
        """Holders of `owner`'s leases taken before `taken_before_ns`."""
        rows = self.db.query("SELECT holder FROM leases WHERE owner = ? AND taken_ns < ?",
                             (owner, taken_before_ns))
        return {r["holder"] for r in rows}

    def lease_holders(self, image_id: str) -> list[str]:
        return [r["holder"] for r in self.db.query(
            "SELECT holder FROM leases WHERE image_id = ? ORDER BY rowid", (image_id,))]

    def leases_of(self, image_id: str) -> list[tuple[str, str]]:
        """(holder, owner) of each lease on the image, oldest first."""
        return [(r["holder"], r["owner"]) for r in self.db.query(
            "SELECT holder, owner FROM leases WHERE image_id = ? ORDER BY rowid", (image_id,))]

    def leased_chains(self) -> set[str]:
        return {r["chain_id"] for r in self.db.query("SELECT chain_id FROM leases")}

    def lease_counts(self, owner: str | None = None) -> dict[str, int]:
        """Leases per image: every owner's, or only `owner`'s."""
        rows = self.db.query("SELECT image_id, COUNT(*) AS n FROM leases "
                             "WHERE ?1 IS NULL OR owner = ?1 GROUP BY image_id", (owner,))
        return {r["image_id"]: r["n"] for r in rows}
