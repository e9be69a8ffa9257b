"""SQLite state of the volume service: volumes and the leases held on them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name       TEXT PRIMARY KEY,
    driver     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    labels     TEXT NOT NULL,
    options    TEXT NOT NULL,
    anonymous  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    volume      TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
    holder      TEXT NOT NULL,
    acquired_ns INTEGER NOT NULL,
    PRIMARY KEY (volume, holder)
);
CREATE INDEX IF NOT EXISTS leases_by_holder ON leases(holder);
"""


@dataclass
class VolumeRecord:
    name: str
    driver: str
    created_at: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False


def _record(row) -> VolumeRecord:
    return VolumeRecord(name=row["name"], driver=row["driver"], created_at=row["created_at"],
                        labels=json.loads(row["labels"]), options=json.loads(row["options"]),
                        anonymous=bool(row["anonymous"]))


class VolumeStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)

    def get(self, name: str) -> VolumeRecord | None:
        row = self.db.query_one("SELECT * FROM volumes WHERE name = ?", (name,))
        return _record(row) if row else None

    def all(self) -> list[VolumeRecord]:
        return [_record(r) for r in self.db.query("SELECT * FROM volumes ORDER BY name")]

    def count(self) -> int:
        return self.db.query_one("SELECT COUNT(*) AS n FROM volumes")["n"]

    def add(self, volume: VolumeRecord) -> None:
        self.db.execute(
            "INSERT INTO volumes (name, driver, created_at, labels, options, anonymous) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (volume.name, volume.driver, volume.created_at, json.dumps(volume.labels),
             json.dumps(volume.options), int(volume.anonymous)))

    def delete(self, name: str) -> None:
        self.db.execute("DELETE FROM volumes WHERE name = ?", (name,))

    def holders(self, name: str) -> list[str]:
        rows = self.db.query("SELECT holder FROM leases WHERE volume = ? ORDER BY rowid", (name,))
        return [r["holder"] for r in rows]

    def lease_counts(self) -> dict[str, int]:
        rows = self.db.query("SELECT volume, COUNT(*) AS n FROM leases GROUP BY volume")
        return {r["volume"]: r["n"] for r in rows}

    def leased_by(self, holder: str) -> list[str]:
        rows = self.db.query("SELECT volume FROM leases WHERE holder = ? ORDER BY rowid",
                             (holder,))
        return [r["volume"] for r in rows]

    def holders_before(self, acquired_ns: int) -> set[str]:
        """Holders with a lease taken before `acquired_ns`."""
        rows = self.db.query("SELECT DISTINCT holder FROM leases WHERE acquired_ns < ?",
                             (acquired_ns,))
        return {r["holder"] for r in rows}

    def add_lease(self, name: str, holder: str) -> bool:
        """Record `holder`'s lease; False when it already held one."""
        return self.db.execute(
            "INSERT OR IGNORE INTO leases (volume, holder, acquired_ns) VALUES (?, ?, ?)",
            (name, holder, time.time_ns())) == 1

    def drop_lease(self, name: str, holder: str) -> bool:
        return self.db.execute("DELETE FROM leases WHERE volume = ? AND holder = ?",
                               (name, holder)) == 1
