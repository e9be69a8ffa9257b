"""Log limits (LogConfig max-size and max-file) and the rotation of the logs
that keep several files. conmon truncates at its own limit, so a single-file
log is capped by conmon; with several files the service renames them and
has conmon reopen its log, checking every second."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import Conflict, InvalidArgument
from services.container.logs import rotated
from services.container.runtime import Bundle, Runtime
from services.container.store import Container

CHECK_SECONDS = 1.0


def log_file(log_config: container_pb2.LogConfig) -> Path | None:
    """Where a k8s-file LogConfig (the CRI's log format, which conmon writes
    anyway) puts the log; None for the others (the bundle's own file)."""
    if log_config.type != "k8s-file":
        return None
    path = log_config.config.get("path", "")
    if not path.startswith("/"):
        raise InvalidArgument(f"log driver k8s-file needs an absolute path option: {path!r}")
    return Path(path)


def log_limits(log_config: container_pb2.LogConfig) -> tuple[int, int]:
    """LogConfig max-size in bytes (0: none) and max-file (default 1)."""
    log_file(log_config)
    options = log_config.config
    files = options.get("max-file", "1")
    if not files.isdigit() or int(files) < 1:
        raise InvalidArgument(f"invalid value for max-file: {files}")
    return _bytes(options.get("max-size", "")), int(files)


def conmon_size_cap(log_config: container_pb2.LogConfig) -> int:
    """The size conmon truncates at: max-size for a single file, else none."""
    max_size, max_files = log_limits(log_config)
    return max_size if max_files == 1 else 0


def _bytes(size: str) -> int:
    """Docker's size strings (10m, 1g, 512k, 100) -> bytes; 0 when empty."""
    text = size.strip().lower().removesuffix("b")
    if not text:
        return 0
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        if text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid size: '{size}'") from None


def rotate(path: Path, max_files: int) -> None:
    """Docker's json-file rotation: log -> log.1 -> ... -> log.<max_files - 1>."""
    rotated(path, max_files - 1).unlink(missing_ok=True)
    for index in range(max_files - 2, 0, -1):
        if rotated(path, index).exists():
            rotated(path, index).rename(rotated(path, index + 1))
    path.rename(rotated(path, 1))


async def rotate_forever(containers: Callable[[], Iterable[Container]],
                         bundle_of: Callable[[Container], Bundle], runtime: Runtime) -> None:
    """One loop for every container whose LogConfig keeps several files."""
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        for container in list(containers()):
            max_size, max_files = log_limits(container.host_config.log_config)
            if container.state.status not in ("running", "paused") or max_files < 2:
                continue
            bundle = bundle_of(container)
            with contextlib.suppress(OSError, Conflict):
                if max_size and bundle.log.stat().st_size >= max_size:
                    runtime.rotate_log(bundle, functools.partial(rotate, bundle.log, max_files))
