"""The cri service's SQLite state (D/cri/state.db): pod sandboxes, and the
CRI config of each container it created (the berth container holds the
rest: state, exit code, logs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from k8s.runtime.v1 import api_pb2
from services.common.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    config BLOB NOT NULL,                 -- runtime.v1.PodSandboxConfig
    runtime_handler TEXT NOT NULL,
    state TEXT NOT NULL,                  -- ready, notready
    created_ns INTEGER NOT NULL,
    pause_id TEXT NOT NULL,               -- the berth container holding the namespaces
    netns_path TEXT NOT NULL,             -- empty for host-network pods
    ips TEXT NOT NULL                     -- JSON list, first IPv4 first
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,                  -- the berth container ID
    sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    config BLOB NOT NULL,                 -- runtime.v1.ContainerConfig
    image_id TEXT NOT NULL,
    log_path TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS start_failures (
    id TEXT PRIMARY KEY,                  -- a container of the containers table
    message TEXT NOT NULL,                -- what StartContainer answered
    failed_ns INTEGER NOT NULL
);
"""

READY, NOT_READY = "ready", "notready"


@dataclass
class Sandbox:
    id: str
    config: api_pb2.PodSandboxConfig
    runtime_handler: str
    state: str
    created_ns: int
    pause_id: str = ""
    netns_path: str = ""
    ips: list[str] = field(default_factory=list)

    @property
    def host_network(self) -> bool:
        options = self.config.linux.security_context.namespace_options
        return options.network == api_pb2.NODE


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    config: api_pb2.ContainerConfig
    image_id: str
    log_path: str
    created_ns: int
    start_error: str = ""               # set when StartContainer failed: the container exited
    start_failed_ns: int = 0


def _sandbox(row) -> Sandbox:
    return Sandbox(id=row["id"], config=api_pb2.PodSandboxConfig.FromString(row["config"]),
                   runtime_handler=row["runtime_handler"], state=row["state"],
                   created_ns=row["created_ns"], pause_id=row["pause_id"],
                   netns_path=row["netns_path"], ips=json.loads(row["ips"]))


def _container(row) -> ContainerRecord:
    return ContainerRecord(id=row["id"], sandbox_id=row["sandbox_id"],
                           config=api_pb2.ContainerConfig.FromString(row["config"]),
                           image_id=row["image_id"], log_path=row["log_path"],
                           created_ns=row["created_ns"], start_error=row["message"] or "",
                           start_failed_ns=row["failed_ns"] or 0)


class CriStore:
    def __init__(self, path: Path) -> None:
        self._db = Database(path, SCHEMA)

    def save_sandbox(self, sandbox: Sandbox) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sandboxes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sandbox.id, sandbox.config.SerializeToString(), sandbox.runtime_handler,
             sandbox.state, sandbox.created_ns, sandbox.pause_id, sandbox.netns_path,
             json.dumps(sandbox.ips)))

    def sandboxes(self) -> list[Sandbox]:
        return [_sandbox(row) for row in self._db.query(
            "SELECT * FROM sandboxes ORDER BY created_ns")]

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def save_container(self, record: ContainerRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO containers VALUES (?, ?, ?, ?, ?, ?)",
            (record.id, record.sandbox_id, record.config.SerializeToString(),
             record.image_id, record.log_path, record.created_ns))
        if record.start_error:
            self._db.execute("INSERT OR REPLACE INTO start_failures VALUES (?, ?, ?)",
                             (record.id, record.start_error, record.start_failed_ns))

    def containers(self) -> list[ContainerRecord]:
        return [_container(row) for row in self._db.query(
            "SELECT containers.*, start_failures.message, start_failures.failed_ns "
            "FROM containers LEFT JOIN start_failures USING (id) ORDER BY created_ns")]

    def delete_container(self, cid: str) -> None:
        self._db.execute("DELETE FROM containers WHERE id = ?", (cid,))
        self._db.execute("DELETE FROM start_failures WHERE id = ?", (cid,))

    def close(self) -> None:
        self._db.close()
