"""The volume domain on a temp root: restart reconciliation, sizes, validation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.errors import Conflict, InvalidArgument
from services.common.events import EventBus
from services.common.filters import Filters
from services.volume.local import LocalDriver, directory_size
from services.volume.store import VolumeStore
from services.volume.volumes import VolumeManager

TMPFS = {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}


def manager_on(root: Path) -> VolumeManager:
    return VolumeManager(VolumeStore(root / "state.db"), LocalDriver(root / "volumes"),
                         EventBus("volume"))


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    for target in [line.split()[1] for line in mounts if str(tmp_path) in line]:
        subprocess.run(["umount", "-l", target], check=False)


def test_reconcile_restores_mounts_of_leased_volumes_and_drops_strays(root: Path) -> None:
    async def before_restart() -> None:
        manager = manager_on(root)
        await manager.create("leased", "local", TMPFS, {})
        await manager.create("idle", "local", TMPFS, {})
        await manager.acquire("leased", "c1", "", {}, {}, False)
        await manager.acquire("idle", "c2", "", {}, {}, False)
        manager.store.drop_lease("idle", "c2")
        await manager.driver.unmount("leased")
        (root / "volumes" / "stray" / "_data").mkdir(parents=True)

    async def after_restart() -> VolumeManager:
        manager = manager_on(root)
        await manager.reconcile()
        return manager
    asyncio.run(before_restart())
    manager = asyncio.run(after_restart())
    assert manager.driver.is_mounted("leased")
    assert not manager.driver.is_mounted("idle")
    assert not (root / "volumes" / "stray").exists()
    with pytest.raises(Conflict, match=r"remove leased: volume is in use - \[c1\]"):
        asyncio.run(manager.remove("leased", force=True))
    assert asyncio.run(manager.release("", "c1", remove_anonymous=True)) == []
    assert not manager.driver.is_mounted("leased")


def test_failed_first_mount_leaves_nothing(root: Path) -> None:
    manager = manager_on(root)
    with pytest.raises(Exception, match="error while mounting volume"):
        asyncio.run(manager.acquire("", "c1", "local", {"type": "bogusfs", "device": "x"}, {},
                                    True))
    assert manager.store.all() == []
    assert os.listdir(root / "volumes") == []


def test_directory_size_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 1000)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c").write_bytes(b"y" * 24)
    assert directory_size(tmp_path) == 1024


@pytest.mark.parametrize(("options", "message"), [
    ({"foo": "bar"}, 'create v1: invalid option: "foo"'),
    ({"type": "tmpfs"}, 'create v1: missing required option: "device"'),
    ({"o": "size=1m"}, 'create v1: missing required option: "device"'),
    ({"device": "/x"}, 'create v1: missing required option: "type"'),
])
def test_driver_options_are_checked_as_moby(tmp_path: Path, options: dict[str, str],
                                            message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        asyncio.run(manager_on(tmp_path).create("v1", "local", options, {}))
    assert caught.value.message == message


def test_release_gone_spares_known_holders_and_new_leases(root: Path) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        manager = manager_on(root)
        await manager.acquire("data", "gone", "", {}, {}, False)
        await manager.acquire("data", "alive", "", {}, {}, False)
        cutoff = time.time_ns()
        await manager.acquire("data", "creating", "", {}, {}, False)
        await manager.acquire("", "gone", "", {}, {}, True)
        dropped = await manager.release_gone({"alive"}, cutoff)
        names = [v.record.name for v in await manager.list(Filters(), usage=False)]
        return dropped, manager.store.holders("data"), names
    dropped, holders, names = asyncio.run(scenario())
    assert dropped == ["gone"]
    assert holders == ["alive", "creating"]
    assert len(names) == 2
