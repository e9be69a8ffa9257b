"""`berth serve SERVICE`: run one service in this process."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import os
import signal

from services.common import server
from services.common.config import Config

# The package of each service whose name is not its package's: tools skip
# folders named `build` (pytest, Black, common ignore files).
PACKAGES = {"build": "builder"}

# glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# prctl(2) option
PR_SET_PDEATHSIG = 1


def keep_freed_buffers() -> None:
    """Byte streams cross the services in 1 MiB messages. By default glibc
    maps every buffer above 128 KiB afresh and hands freed heap straight back
    to the kernel, so each message costs page faults: a fifth of the CPU of
    a `docker cp` in. Buffers up to 4 MiB come from the heap, and up to 64 MiB
    of freed heap is kept for the next ones."""
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 4 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)


def stop_with_supervisor(supervisor_pid: int) -> None:
    """Get SIGTERM when `berth up` dies, even by SIGKILL (systemd's
    KillMode=process kills only it): the services then stop gracefully, and
    the next `berth up` starts the only set. Containers keep running (conmon
    holds them). A supervisor that died before the prctl is no longer our
    parent: then there is nobody to serve for."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != supervisor_pid:
        raise SystemExit(f"berth serve: the supervisor (pid {supervisor_pid}) is gone")


def serve(service: str, config: Config, supervisor_pid: int | None = None) -> int:
    if supervisor_pid is not None:
        stop_with_supervisor(supervisor_pid)
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {service} %(levelname)s %(message)s")
    keep_freed_buffers()
    module = importlib.import_module(f"services.{PACKAGES.get(service, service)}.server")
    asyncio.run(server.run(service, config, module.setup))
    return 0
