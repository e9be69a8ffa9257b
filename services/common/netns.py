"""Work inside a network namespace file, from a thread of its own.

setns changes only the calling thread's namespace; a thread of its own that
simply ends afterwards never needs switching back, and nothing forks
(forking a gRPC process is unsafe). A socket made by such a thread stays
in that namespace after the thread ends, so callers may use it from the
event loop.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

# The container service's network mode "ns:<path>" (as Podman names it):
# join the netns file at <path>, made by someone else (the cri service's pod
# sandboxes). Not Docker's: the gateway refuses it from Docker clients.
NETNS_PATH_MODE = "ns:"

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def in_fresh_thread(work: Callable[[], T]) -> T:
    """Run `work` on a new thread that may switch namespaces; returns its
    result or raises its exception."""
    result: list = []

    def run() -> None:
        try:
            result.append((True, work()))
        except BaseException as exc:
            result.append((False, exc))

    thread = threading.Thread(target=run, name="netns")
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def enter(path: str) -> None:
    """Move the calling thread into the network namespace file `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def socket_in(path: str, family: socket.AddressFamily,
              kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    """A non-blocking socket (TCP unless `kind` says otherwise) of the
    namespace `path` (the host's when `path` is empty)."""
    def make() -> socket.socket:
        if path:
            enter(path)
        sock = socket.socket(family, kind)
        sock.setblocking(False)
        return sock
    return in_fresh_thread(make) if path else make()
