"""Fixtures every test package shares: an engine, the busybox image, a registry.

The engine is per test module: each module gets its own data and exec roots,
and its teardown removes every container, network and volume it made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.debian_image import rootfs_tarball
from tests.support.engine import Engine, running_engine
from tests.support.images import busybox_archive
from tests.support.registry import Registry, running_registry


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docker-archive tar of busybox:latest built from Debian's busybox-static."""
    return busybox_archive(tmp_path_factory.mktemp("images") / "busybox.tar")


@pytest.fixture(scope="session")
def debian_stack_rootfs() -> Path:
    """Rootfs tar of a Debian bookworm with nginx-light, redis-server and python3,
    debootstrapped from the host's Debian mirror once and cached (see debian_image)."""
    return rootfs_tarball()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine() as running:
        yield running


@pytest.fixture(scope="module")
def busybox(engine: Engine, busybox_tar: Path) -> str:
    """busybox:latest loaded into the module's engine."""
    engine.docker("load", "-i", str(busybox_tar))
    return "busybox:latest"


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    with running_registry() as running:
        yield running
