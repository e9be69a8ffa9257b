"""The rotation of the logs that keep several files (the log driver's
max-size and max-file, see logdrivers.py). conmon truncates at its own limit,
so a single-file log is capped by conmon; with several files the service
renames them, gzips the rotated ones when the driver compresses, and has
conmon reopen its log, checking every second."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import Conflict
from services.container import logdrivers
from services.container.logs import rotated, rotated_files
from services.container.runtime import Bundle, Runtime
from services.container.store import Container

CHECK_SECONDS = 1.0


def conmon_size_cap(log_config: container_pb2.LogConfig) -> int:
    """The size conmon truncates at: max-size for a single file, else none."""
    limits = logdrivers.limits(log_config)
    return limits.max_size if limits.max_files == 1 else 0


def rotate(path: Path, max_files: int) -> None:
    """Docker's rotation: log -> log.1 -> ... -> log.<max_files - 1>, each
    rotated file keeping its .gz suffix when it has one."""
    for old in rotated_files(path):
        index = int(old.name[len(path.name) + 1:].removesuffix(".gz"))
        if index >= max_files - 1:
            old.unlink(missing_ok=True)
        else:
            old.rename(rotated(path, index + 1, old.name.endswith(".gz")))
    path.rename(rotated(path, 1))


def compress(path: Path) -> None:
    """gzip a rotated file (log.1 -> log.1.gz) as Docker's compress option does."""
    if not path.exists():
        return
    partial = path.with_name(path.name + ".gz.partial")
    with path.open("rb") as source, gzip.open(partial, "wb") as sink:
        shutil.copyfileobj(source, sink)
    partial.rename(path.with_name(path.name + ".gz"))
    path.unlink()


async def rotate_forever(containers: Callable[[], Iterable[Container]],
                         bundle_of: Callable[[Container], Bundle], runtime: Runtime) -> None:
    """One loop for every container whose log keeps several files."""
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        for container in list(containers()):
            log_config = container.host_config.log_config
            if container.state.status not in ("running", "paused") or log_config.type == "none":
                continue
            limits = logdrivers.limits(log_config)
            if limits.max_files < 2 or not limits.max_size:
                continue
            bundle = bundle_of(container)
            with contextlib.suppress(OSError, Conflict):
                if bundle.log.stat().st_size >= limits.max_size:
                    runtime.rotate_log(bundle, functools.partial(rotate, bundle.log,
                                                                 limits.max_files))
                    if limits.compress:
                        await asyncio.to_thread(compress, rotated(bundle.log, 1))
