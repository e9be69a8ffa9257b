"""`berth serve SERVICE`: run one service in this process."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging

from services.common import server
from services.common.config import Config

# The package of each service whose name is not its package's: tools skip
# folders named `build` (pytest, Black, common ignore files).
PACKAGES = {"build": "builder"}

# glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_buffers() -> None:
    """Byte streams cross the services in 1 MiB messages. By default glibc
    maps every buffer above 128 KiB afresh and hands freed heap straight back
    to the kernel, so each message costs page faults: a fifth of the CPU of
    a `docker cp` in. Buffers up to 4 MiB come from the heap, and up to 64 MiB
    of freed heap is kept for the next ones."""
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 4 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)


def serve(service: str, config: Config) -> int:
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {service} %(levelname)s %(message)s")
    keep_freed_buffers()
    module = importlib.import_module(f"services.{PACKAGES.get(service, service)}.server")
    asyncio.run(server.run(service, config, module.setup))
    return 0
