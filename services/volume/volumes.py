"""The volume service's domain: named and anonymous volumes and their leases.

A lease (volume, holder) is taken by the container service for each container
that mounts a volume; a leased volume is never removed. Leases live in SQLite,
so they hold across restarts of either service.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from dataclasses import dataclass

from prometheus_client import Gauge

from services.common.errors import Conflict, InvalidArgument, NotFound
from services.common.events import EventBus
from services.common.filters import Filters
from services.volume.local import LocalDriver, validate_options
from services.volume.store import VolumeRecord, VolumeStore

log = logging.getLogger("berth.volume")

VOLUMES = Gauge("berth_volume_volumes", "Volumes the volume service holds.")
VOLUME_BYTES = Gauge("berth_volume_bytes", "Bytes stored in all volumes (computed periodically).")

NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LIST_FILTERS = {"name", "label", "driver", "dangling"}
PRUNE_FILTERS = {"label", "label!", "all"}
SIZE_INTERVAL_SECONDS = 30.0


@dataclass
class VolumeView:
    """A volume with what only the service knows: its path and usage."""

    record: VolumeRecord
    mountpoint: str
    size: int = -1
    ref_count: int = -1


@dataclass
class Acquired:
    view: VolumeView
    created: bool


def validate_name(name: str) -> None:
    if len(name) == 1:
        raise InvalidArgument(
            "volume name is too short, names should be at least two alphanumeric characters")
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f'"{name}" includes invalid characters for a local volume name, only '
            f'"{NAME_CHARS}" are allowed. If you intended to pass a host directory, '
            f"use absolute path")


class VolumeManager:
    def __init__(self, store: VolumeStore, driver: LocalDriver, events: EventBus) -> None:
        self.store = store
        self.driver = driver
        self.events = events
        # Serialises changes: a mount or removal awaits, and a lease taken
        # meanwhile must see the volume as it ends up.
        self._lock = asyncio.Lock()
        VOLUMES.set(store.count())

    def _view(self, record: VolumeRecord) -> VolumeView:
        return VolumeView(record, str(self.driver.data_path(record.name)))

    def _get(self, name: str) -> VolumeRecord:
        record = self.store.get(name)
        if record is None:
            raise NotFound(f"get {name}: no such volume")
        return record

    # Create, inspect, list

    async def create(self, name: str, driver: str, options: dict[str, str],
                     labels: dict[str, str], anonymous: bool = False) -> tuple[VolumeView, bool]:
        """Create a volume, or return the existing one of that name (as Docker)."""
        async with self._lock:
            return await self._create(name, driver, options, labels, anonymous)

    async def _create(self, name: str, driver: str, options: dict[str, str],
                      labels: dict[str, str], anonymous: bool) -> tuple[VolumeView, bool]:
        name = name or secrets.token_hex(32)
        driver = driver or "local"
        try:
            if driver != "local":
                raise NotFound(f'error looking up volume plugin {driver}: '
                               f'plugin "{driver}" not found')
            validate_name(name)
            validate_options(options)
        except (NotFound, InvalidArgument) as exc:
            raise type(exc)(f"create {name}: {exc.message}") from exc
        existing = self.store.get(name)
        if existing is not None:
            return self._view(existing), False
        if anonymous:
            labels = {ANONYMOUS_LABEL: "", **labels}
        record = VolumeRecord(name=name, driver=driver,
                              created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              labels=labels, options=options, anonymous=anonymous)
        try:
            self.driver.make(name)
        except InvalidArgument as exc:
            raise InvalidArgument(f"create {name}: {exc.message}") from exc
        try:
            self.store.add(record)
        except Exception:
            await self.driver.remove(name)
            raise
        VOLUMES.set(self.store.count())
        self.events.publish("create", name, {"driver": driver})
        return self._view(record), True

    def inspect(self, name: str) -> VolumeView:
        return self._view(self._get(name))

    async def list(self, filters: Filters, usage: bool) -> list[VolumeView]:
        filters.checked(LIST_FILTERS)
        dangling = filters.flag("dangling")
        counts = self.store.lease_counts()
        views = [self._view(r) for r in self.store.all()
                 if self._matches(r, filters, dangling, counts.get(r.name, 0))]
        if usage:
            for view in views:
                view.size = await self.driver.size(view.record.name)
                view.ref_count = counts.get(view.record.name, 0)
        return views

    @staticmethod
    def _matches(record: VolumeRecord, filters: Filters, dangling: bool | None,
                 leases: int) -> bool:
        if dangling is not None and dangling != (leases == 0):
            return False
        return (filters.match_name("name", record.name)
                and filters.match_any("driver", record.driver.__eq__)
                and filters.match_labels(record.labels))

    # Remove and prune

    async def remove(self, name: str, force: bool) -> None:
        async with self._lock:
            record = self.store.get(name)
            if record is None:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            await self._remove(record)

    async def _remove(self, record: VolumeRecord) -> None:
        holders = self.store.holders(record.name)
        if holders:
            raise Conflict(f"remove {record.name}: volume is in use - [{', '.join(holders)}]")
        if self.driver.is_mounted(record.name):
            await self.driver.unmount(record.name)  # a failure keeps the volume whole
        self.store.delete(record.name)
        await self.driver.remove(record.name)
        VOLUMES.set(self.store.count())
        self.events.publish("destroy", record.name, {"driver": record.driver})

    async def prune(self, filters: Filters) -> tuple[list[str], int]:
        every = filters.checked(PRUNE_FILTERS).boolean("all", False)
        deleted: list[str] = []
        reclaimed = 0
        async with self._lock:
            counts = self.store.lease_counts()
            for record in self.store.all():
                if counts.get(record.name) or not (every or record.anonymous):
                    continue
                if not filters.match_labels(record.labels):
                    continue
                size = 0 if self.driver.is_mounted(record.name) else \
                    await self.driver.size(record.name)
                await self._remove(record)
                deleted.append(record.name)
                reclaimed += size
        self.events.publish("prune", "", {"reclaimed": str(reclaimed)})
        return deleted, reclaimed

    # Leases

    async def acquire(self, name: str, holder: str, driver: str, options: dict[str, str],
                      labels: dict[str, str], anonymous: bool, destination: str = "",
                      read_only: bool = False) -> Acquired:
        """Lease `name` for `holder`, creating it when missing; mounts it on first lease."""
        if not holder:
            raise InvalidArgument("holder is required")
        async with self._lock:
            view, created = await self._create(name, driver, options, labels,
                                               anonymous or not name)
            record = view.record
            first = not self.store.holders(record.name)
            added = self.store.add_lease(record.name, holder)
            try:
                if first and record.options and not self.driver.is_mounted(record.name):
                    await self.driver.mount(record.name, record.options)
            except Exception:
                if added:
                    self.store.drop_lease(record.name, holder)
                if created:
                    await self._remove(record)
                raise
        self.events.publish("mount", record.name, {
            "container": holder, "destination": destination, "driver": record.driver,
            "propagation": "", "read/write": str(not read_only).lower()})
        return Acquired(view, created)

    async def release(self, name: str, holder: str, remove_anonymous: bool) -> list[str]:
        """Drop `holder`'s lease on `name` (all its leases when name is empty).

        The last lease unmounts a volume with mount options; with
        `remove_anonymous`, anonymous volumes left unleased are removed.
        """
        removed: list[str] = []
        async with self._lock:
            names = [name] if name else self.store.leased_by(holder)
            for volume in names:
                record = self.store.get(volume)
                if record is None or not self.store.drop_lease(volume, holder):
                    continue
                self.events.publish("unmount", volume,
                                    {"container": holder, "driver": record.driver})
                if self.store.holders(volume):
                    continue
                if record.anonymous and remove_anonymous:
                    await self._remove(record)
                    removed.append(volume)
                elif record.options and self.driver.is_mounted(volume):
                    await self.driver.unmount(volume)
        return removed

    async def release_gone(self, holders: set[str], before_ns: int) -> list[str]:
        """Drop the leases of holders not in `holders` taken before `before_ns`.

        Their anonymous volumes stay (dangling, for prune): whether the
        container was removed with -v is not known any more.
        """
        gone = sorted(self.store.holders_before(before_ns) - holders)
        for holder in gone:
            log.warning("dropping the volume leases of %s, which no longer exists", holder)
            await self.release("", holder, remove_anonymous=False)
        return gone

    # Upkeep

    async def reconcile(self) -> None:
        """After a restart: mounts match leases, and no directory lacks a row."""
        async with self._lock:
            known = {r.name: r for r in self.store.all()}
            for name in self.driver.names_on_disk():
                if name not in known and not self.driver.is_mounted(name):
                    log.warning("removing volume directory without a record: %s", name)
                    await self.driver.remove(name)
            counts = self.store.lease_counts()
            for record in known.values():
                if not record.options:
                    continue
                mounted = self.driver.is_mounted(record.name)
                try:
                    if counts.get(record.name) and not mounted:
                        await self.driver.mount(record.name, record.options)
                    elif not counts.get(record.name) and mounted:
                        await self.driver.unmount(record.name)
                except Exception as exc:  # one broken volume must not stop the service
                    log.warning("volume %s: %s", record.name, exc)

    async def measure_forever(self) -> None:
        """Keep berth_volume_bytes current, off the event loop."""
        while True:
            total = 0
            for record in self.store.all():
                total += await self.driver.size(record.name)
            VOLUME_BYTES.set(total)
            await asyncio.sleep(SIZE_INTERVAL_SECONDS)
