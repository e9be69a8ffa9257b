"""The build cache index (SQLite under D/build/): which image a step made
from which parent, keyed by the parent and everything the step depends on."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    image_id TEXT NOT NULL,
    description TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_used_at REAL NOT NULL,
    usage_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cache_image ON cache (image_id);
CREATE TABLE IF NOT EXISTS in_flight (
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    PRIMARY KEY (kind, ref)
);
"""


def cache_key(parent: str, step: dict) -> str:
    """Digest of the parent image and the step's full description."""
    payload = json.dumps({"parent": parent, "step": step}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class CacheRecord:
    key: str
    parent: str
    image_id: str
    description: str
    size: int
    created_at: float
    last_used_at: float
    usage_count: int


class CacheStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)

    def lookup(self, key: str) -> CacheRecord | None:
        row = self.db.query_one("SELECT * FROM cache WHERE key = ?", (key,))
        return CacheRecord(**dict(row)) if row else None

    def touch(self, key: str) -> None:
        self.db.execute("UPDATE cache SET last_used_at = ?, usage_count = usage_count + 1 "
                        "WHERE key = ?", (time.time(), key))

    def record(self, key: str, parent: str, image_id: str, description: str,
               size: int) -> None:
        now = time.time()
        self.db.execute(
            "INSERT OR REPLACE INTO cache (key, parent, image_id, description, size, "
            "created_at, last_used_at, usage_count) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (key, parent, image_id, description, size, now, now))

    def forget(self, key: str) -> None:
        self.db.execute("DELETE FROM cache WHERE key = ?", (key,))

    def all(self) -> list[CacheRecord]:
        return [CacheRecord(**dict(row))
                for row in self.db.query("SELECT * FROM cache ORDER BY created_at")]

    def hold(self, kind: str, ref: str) -> None:
        """Note a container a running build holds, so a restart after a
        crash can remove it."""
        self.db.execute("INSERT OR IGNORE INTO in_flight (kind, ref) VALUES (?, ?)", (kind, ref))

    def let_go(self, kind: str, ref: str) -> None:
        self.db.execute("DELETE FROM in_flight WHERE kind = ? AND ref = ?", (kind, ref))

    def held(self) -> list[tuple[str, str]]:
        return [(row["kind"], row["ref"]) for row in self.db.query("SELECT * FROM in_flight")]
