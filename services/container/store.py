"""SQLite state of the container service: one row per container.

The user's config, host config and networking config are stored as
serialized protos; the runtime state as JSON of `State`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import AlreadyExists
from services.common.store import Database
from services.container.mounts import MountPlan

_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ns INTEGER NOT NULL,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    lower_dirs TEXT NOT NULL,
    config BLOB NOT NULL,
    host_config BLOB NOT NULL,
    networking_config BLOB NOT NULL,
    mounts TEXT NOT NULL,
    state TEXT NOT NULL
);
"""


@dataclass
class State:
    status: str = "created"       # created, running, paused, restarting, exited, dead
    pid: int = 0
    conmon_pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_ns: int = 0
    finished_ns: int = 0
    restart_count: int = 0
    manually_stopped: bool = False  # stop/kill by the user: no restart policy
    has_been_started: bool = False
    health: dict = field(default_factory=dict)   # State.Health, kept by health.py


@dataclass
class Container:
    id: str
    name: str
    created_ns: int
    image: str                    # as the user named it
    image_id: str
    lower_dirs: list[str]
    config: container_pb2.ContainerConfig
    host_config: container_pb2.HostConfig
    networking_config: container_pb2.NetworkingConfig
    mounts: MountPlan = field(default_factory=MountPlan)
    state: State = field(default_factory=State)

    @property
    def running(self) -> bool:
        return self.state.status in ("running", "paused", "restarting")


def _from_row(row: sqlite3.Row) -> Container:
    return Container(
        id=row["id"], name=row["name"], created_ns=row["created_ns"], image=row["image"],
        image_id=row["image_id"], lower_dirs=json.loads(row["lower_dirs"]),
        config=container_pb2.ContainerConfig.FromString(row["config"]),
        host_config=container_pb2.HostConfig.FromString(row["host_config"]),
        networking_config=container_pb2.NetworkingConfig.FromString(row["networking_config"]),
        mounts=MountPlan.from_json(row["mounts"]),
        state=_state(json.loads(row["state"])))


def _state(saved: dict) -> State:
    """State from its JSON; keys of older or newer versions are ignored."""
    known = {f.name for f in fields(State)}
    return State(**{key: value for key, value in saved.items() if key in known})


class ContainerStore:
    def __init__(self, path: Path) -> None:
        self._db = Database(path, _SCHEMA)

    def insert(self, c: Container) -> None:
        try:
            self._db.execute(
                "INSERT INTO containers VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (c.id, c.name, c.created_ns, c.image, c.image_id, json.dumps(c.lower_dirs),
                 c.config.SerializeToString(), c.host_config.SerializeToString(),
                 c.networking_config.SerializeToString(), c.mounts.to_json(),
                 json.dumps(asdict(c.state))))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(self.name_in_use(c.name)) from exc

    def name_in_use(self, name: str) -> str:
        row = self._db.query_one("SELECT id FROM containers WHERE name = ?", (name,))
        holder = row["id"] if row else ""
        return (f'Conflict. The container name "/{name}" is already in use by container '
                f'"{holder}". You have to remove (or rename) that container to be able '
                f"to reuse that name.")

    def save_state(self, c: Container) -> None:
        self._db.execute("UPDATE containers SET state = ? WHERE id = ?",
                         (json.dumps(asdict(c.state)), c.id))

    def save_host_config(self, c: Container) -> None:
        self._db.execute("UPDATE containers SET host_config = ? WHERE id = ?",
                         (c.host_config.SerializeToString(), c.id))

    def rename(self, c: Container, name: str) -> None:
        try:
            self._db.execute("UPDATE containers SET name = ? WHERE id = ?", (name, c.id))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(self.name_in_use(name)) from exc
        c.name = name

    def delete(self, container_id: str) -> None:
        self._db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def all(self) -> list[Container]:
        return [_from_row(r) for r in self._db.query(
            "SELECT * FROM containers ORDER BY created_ns DESC")]

    def close(self) -> None:
        self._db.close()
