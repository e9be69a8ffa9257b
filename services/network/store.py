"""SQLite state of the network service: networks, endpoint configs, sandboxes.

An endpoint row is a container's membership of a network. It outlives the
sandbox (a stopped container keeps its networks); `ip`, `ifname` and
`host_ifname` (bridge endpoints only) are set only while the endpoint is
wired. A `disconnected` row remembers that the user disconnected a network
the container service still lists for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.store import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    driver TEXT NOT NULL,
    created TEXT NOT NULL,
    bridge TEXT NOT NULL DEFAULT '',
    subnet TEXT NOT NULL DEFAULT '',
    gateway TEXT NOT NULL DEFAULT '',
    ip_range TEXT NOT NULL DEFAULT '',
    internal INTEGER NOT NULL DEFAULT 0,
    attachable INTEGER NOT NULL DEFAULT 0,
    enable_ipv6 INTEGER NOT NULL DEFAULT 0,
    builtin INTEGER NOT NULL DEFAULT 0,
    mtu INTEGER NOT NULL DEFAULT 0,
    icc INTEGER NOT NULL DEFAULT 1,
    user_subnet INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}',
    labels TEXT NOT NULL DEFAULT '{}',
    ipam_options TEXT NOT NULL DEFAULT '{}',
    aux_addresses TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS endpoints (
    network_id TEXT NOT NULL REFERENCES networks(id),
    container_id TEXT NOT NULL,
    container_name TEXT NOT NULL DEFAULT '',
    endpoint_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'connected',
    ip TEXT NOT NULL DEFAULT '',
    mac TEXT NOT NULL DEFAULT '',
    ipv4_requested TEXT NOT NULL DEFAULT '',
    aliases TEXT NOT NULL DEFAULT '[]',
    links TEXT NOT NULL DEFAULT '[]',
    ifname TEXT NOT NULL DEFAULT '',
    host_ifname TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (network_id, container_id)
);
CREATE TABLE IF NOT EXISTS sandboxes (
    container_id TEXT PRIMARY KEY,
    container_name TEXT NOT NULL DEFAULT '',
    netns_path TEXT NOT NULL DEFAULT '',
    owns_netns INTEGER NOT NULL DEFAULT 0,
    mode TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    ports TEXT NOT NULL DEFAULT '[]',
    dns TEXT NOT NULL DEFAULT '[]',
    hosts TEXT NOT NULL DEFAULT '',
    resolv_conf TEXT NOT NULL DEFAULT ''
);
"""


@dataclass
class NetworkRecord:
    id: str
    name: str
    driver: str
    created: str
    bridge: str = ""
    subnet: str = ""
    gateway: str = ""
    subnet6: str = ""
    gateway6: str = ""
    ip_range: str = ""
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    builtin: bool = False
    mtu: int = 0
    icc: bool = True
    user_subnet: bool = False
    user_subnet6: bool = False        # the IPv6 subnet is the user's, not a random ULA
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ipam_options: dict[str, str] = field(default_factory=dict)
    aux_addresses: dict[str, str] = field(default_factory=dict)
    enable_ipv4: bool = True
    config_only: bool = False
    config_from: str = ""             # ID of the config-only network it took its config from
    created_parent: str = ""          # macvlan/ipvlan: the dummy or VLAN link made for it
    bridge_adopted: bool = False      # a host bridge the user named: used, never deleted

    @property
    def is_user_bridge(self) -> bool:
        return self.driver == "bridge" and not self.builtin

    @property
    def is_user_defined(self) -> bool:
        """Docker's user-defined networks: names resolve, aliases and static IPs work."""
        return self.driver in ("bridge", "macvlan", "ipvlan") and not self.builtin


@dataclass
class EndpointRecord:
    network_id: str
    container_id: str
    endpoint_id: str
    container_name: str = ""
    state: str = "connected"
    ip: str = ""
    ip6: str = ""
    mac: str = ""
    ipv4_requested: str = ""
    ipv6_requested: str = ""
    mac_requested: str = ""
    aliases: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ifname: str = ""
    host_ifname: str = ""
    seq: int = 0
    link_local_ips: list[str] = field(default_factory=list)
    gw_priority: int = 0
    created_ns: int = field(default_factory=time.time_ns)
    driver_opts: dict[str, str] = field(default_factory=dict)

    @property
    def wired(self) -> bool:
        """Set while wired (a macvlan/ipvlan endpoint has no host end)."""
        return bool(self.ifname)


@dataclass
class SandboxRecord:
    container_id: str
    container_name: str = ""
    netns_path: str = ""
    owns_netns: bool = False
    mode: str = ""
    hostname: str = ""
    domainname: str = ""
    ports: list[dict] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    hosts: str = ""
    resolv_conf: str = ""
    owner: str = ""                 # the service that keeps the list of sandbox IDs
    ndots_set: bool = False         # the user's resolv.conf options named ndots
    created_ns: int = field(default_factory=time.time_ns)


_JSON_FIELDS = {"options", "labels", "ipam_options", "aux_addresses", "aliases", "links",
                "ports", "dns", "link_local_ips", "driver_opts"}
_BOOL_FIELDS = {"internal", "attachable", "enable_ipv6", "builtin", "icc", "user_subnet",
                "user_subnet6",
                "owns_netns", "enable_ipv4", "config_only", "bridge_adopted", "ndots_set"}


def _decode(cls: type, row) -> object:
    values = {}
    for key, value in zip(row.keys(), tuple(row), strict=True):
        if key in _JSON_FIELDS:
            value = json.loads(value)
        elif key in _BOOL_FIELDS:
            value = bool(value)
        values[key] = value
    return cls(**values)


def _encode(record: object) -> dict:
    values = dict(record.__dict__)
    for key in _JSON_FIELDS & values.keys():
        values[key] = json.dumps(values[key])
    for key in _BOOL_FIELDS & values.keys():
        values[key] = int(values[key])
    return values


def _upsert(table: str, values: dict, keys: tuple[str, ...]) -> str:
    # ON CONFLICT ... DO UPDATE, not INSERT OR REPLACE: a replace deletes the
    # row first, which the endpoints' foreign key forbids.
    columns = ", ".join(values)
    placeholders = ", ".join(f":{k}" for k in values)
    updates = ", ".join(f"{k} = excluded.{k}" for k in values if k not in keys)
    return (f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


# Columns added after the first release: (table, column, declaration).
ADDED_COLUMNS = [
    ("networks", "subnet6", "TEXT NOT NULL DEFAULT ''"),
    ("networks", "gateway6", "TEXT NOT NULL DEFAULT ''"),
    ("endpoints", "ip6", "TEXT NOT NULL DEFAULT ''"),
    ("endpoints", "mac_requested", "TEXT NOT NULL DEFAULT ''"),
    ("endpoints", "created_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("sandboxes", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("sandboxes", "created_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("networks", "enable_ipv4", "INTEGER NOT NULL DEFAULT 1"),
    ("networks", "config_only", "INTEGER NOT NULL DEFAULT 0"),
    ("networks", "config_from", "TEXT NOT NULL DEFAULT ''"),
    ("networks", "created_parent", "TEXT NOT NULL DEFAULT ''"),
    ("endpoints", "link_local_ips", "TEXT NOT NULL DEFAULT '[]'"),
    ("endpoints", "gw_priority", "INTEGER NOT NULL DEFAULT 0"),
    ("networks", "user_subnet6", "INTEGER NOT NULL DEFAULT 0"),
    ("endpoints", "ipv6_requested", "TEXT NOT NULL DEFAULT ''"),
    ("endpoints", "driver_opts", "TEXT NOT NULL DEFAULT '{}'"),
    ("sandboxes", "domainname", "TEXT NOT NULL DEFAULT ''"),
    ("networks", "bridge_adopted", "INTEGER NOT NULL DEFAULT 0"),
    ("sandboxes", "ndots_set", "INTEGER NOT NULL DEFAULT 0"),
]
# Filled in when the column is added: sandboxes from before are containers'
# unless they are CNI pods'.
BACKFILLS = {
    ("sandboxes", "owner"): "UPDATE sandboxes SET owner = 'container' WHERE mode != 'cni'",
}


class NetworkStore:
    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)
        for table, column, declaration in ADDED_COLUMNS:
            present = {row["name"] for row in self.db.query(f"PRAGMA table_info({table})")}
            if column not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                if (table, column) in BACKFILLS:
                    self.db.execute(BACKFILLS[table, column])

    def networks(self) -> list[NetworkRecord]:
        rows = self.db.query("SELECT * FROM networks ORDER BY created")
        return [_decode(NetworkRecord, r) for r in rows]

    def save_network(self, network: NetworkRecord) -> None:
        values = _encode(network)
        self.db.execute(_upsert("networks", values, ("id",)), values)

    def delete_network(self, network_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM endpoints WHERE network_id = ?", (network_id,))
            conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def endpoints(self, network_id: str | None = None,
                  container_id: str | None = None) -> list[EndpointRecord]:
        sql, params = "SELECT * FROM endpoints WHERE 1=1", []
        if network_id is not None:
            sql += " AND network_id = ?"
            params.append(network_id)
        if container_id is not None:
            sql += " AND container_id = ?"
            params.append(container_id)
        rows = self.db.query(sql + " ORDER BY seq", tuple(params))
        return [_decode(EndpointRecord, r) for r in rows]

    def endpoint(self, network_id: str, container_id: str) -> EndpointRecord | None:
        row = self.db.query_one(
            "SELECT * FROM endpoints WHERE network_id = ? AND container_id = ?",
            (network_id, container_id))
        return _decode(EndpointRecord, row) if row else None

    def save_endpoint(self, endpoint: EndpointRecord) -> None:
        if not endpoint.seq:
            row = self.db.query_one("SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM endpoints")
            endpoint.seq = row["next"]
        values = _encode(endpoint)
        self.db.execute(_upsert("endpoints", values, ("network_id", "container_id")), values)

    def delete_endpoint(self, network_id: str, container_id: str) -> None:
        self.db.execute("DELETE FROM endpoints WHERE network_id = ? AND container_id = ?",
                        (network_id, container_id))

    def forget_container(self, container_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM endpoints WHERE container_id = ?", (container_id,))
            conn.execute("DELETE FROM sandboxes WHERE container_id = ?", (container_id,))

    def sandboxes(self) -> list[SandboxRecord]:
        return [_decode(SandboxRecord, r) for r in self.db.query("SELECT * FROM sandboxes")]

    def sandbox(self, container_id: str) -> SandboxRecord | None:
        row = self.db.query_one("SELECT * FROM sandboxes WHERE container_id = ?",
                                (container_id,))
        return _decode(SandboxRecord, row) if row else None

    def save_sandbox(self, sandbox: SandboxRecord) -> None:
        values = _encode(sandbox)
        self.db.execute(_upsert("sandboxes", values, ("container_id",)), values)

    def delete_sandbox(self, container_id: str) -> None:
        self.db.execute("DELETE FROM sandboxes WHERE container_id = ?", (container_id,))

    def close(self) -> None:
        self.db.close()
