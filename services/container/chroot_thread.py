"""Tar and untar a container's files from a thread of the service chrooted
into the container's root (what Docker's chrootarchive does; moby's newer
one with a locked OS thread): inside the chroot, absolute symlinks in an
archive or planted by the container's processes, even while we walk,
resolve to the container's own root, so nothing on the host is read or
written. No process to start and no pipe to copy through.

Each thread is started for one archive and ends with it (a pool thread
would stay chrooted). In it nothing may be imported (the module's file
would be the container's) and no owner name is looked up: NSS would read
the container's nsswitch.conf and load the libnss modules it names, as
root (CVE-2019-14271). Owners stay numeric, names empty, as moby's
FileInfoHeaderNoLookups leaves them.
"""

from __future__ import annotations

import asyncio

# The modules tarfile imports lazily must be loaded before a chroot hides
# the interpreter's files.
import bz2  # noqa: F401
import concurrent.futures
import contextlib
import ctypes
import importlib.abc
import lzma  # noqa: F401
import os
import sys
import tarfile
import threading
import zlib  # noqa: F401
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from services.common.errors import BerthError, Internal
from services.container import archive

T = TypeVar("T")
CLONE_FS = 0x200
TAR_CHUNK = 1 << 20      # bytes per chunk of a tar going out
_QUEUED_CHUNKS = 4
# tarfile names each entry's owner through pwd/grp unless they are None.
tarfile.pwd = tarfile.grp = None
_libc = ctypes.CDLL(None, use_errno=True)
_chrooted = threading.local()


class _NoImportInChroot(importlib.abc.MetaPathFinder):
    """Refuses any import in a chrooted thread: the module's file would be
    the container's, and its code would run in the service."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if getattr(_chrooted, "root", None):
            raise ImportError(f"import of {fullname} refused in a container's root")


sys.meta_path.insert(0, _NoImportInChroot())


@contextlib.contextmanager
def _chroot_this_thread(root: str) -> Iterator[None]:
    """Chroot the calling thread alone: unshare(CLONE_FS) gives it its own
    root and working directory (the rest of the process keeps the host's).
    The thread goes back to the host's root before it reports the end of its
    work: a thread still rooted in the container's root keeps that mount busy
    until the kernel reaps it, after the caller may already unmount."""
    if _libc.unshare(CLONE_FS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    host_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    _chrooted.root = root
    try:
        os.chroot(root)
        os.chdir("/")
        yield
    finally:
        os.fchdir(host_root)
        os.chroot(".")
        os.close(host_root)
        _chrooted.root = None


async def run_chrooted(root: str, work: Callable[[], T]) -> T:
    """`work()` in a new thread chrooted into `root`: its paths, symlinks
    planted meanwhile included, resolve in the container's root."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[T] = loop.create_future()

    def settle(result: T, error: BaseException | None) -> None:
        if finished.done():   # the caller was cancelled meanwhile
            return
        if error is None:
            finished.set_result(result)
        else:
            finished.set_exception(error)

    def run() -> None:
        result, error = None, None
        try:
            with _chroot_this_thread(root):
                result = work()
        except BerthError as exc:
            error = exc
        except BaseException as exc:  # noqa: BLE001 - reported to the awaiting task
            error = Internal(f"reading the container's files failed: {exc}")
            error.__cause__ = exc
        loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="berth-chrooted", daemon=True).start()
    return await finished


class _ChunkReader:
    """read() for tarfile in a thread, taking the upload's chunks from the
    event loop one at a time."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks, self._loop = chunks, loop
        self._pending = memoryview(b"")
        self._waiting: concurrent.futures.Future | None = None
        self._aborted = False

    async def _next_chunk(self) -> bytes:
        async for chunk in self._chunks:
            if chunk:
                return chunk
        return b""

    def read(self, size: int) -> bytes:
        if not self._pending:
            self._pending = memoryview(self._receive())
        piece, self._pending = self._pending[:size], self._pending[size:]
        return bytes(piece)

    def _receive(self) -> bytes:
        if self._aborted:
            raise OSError("the upload was cancelled")
        self._waiting = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop)
        if self._aborted:
            self._waiting.cancel()
        try:
            return self._waiting.result()
        except concurrent.futures.CancelledError as exc:
            raise OSError("the upload was cancelled") from exc

    def abort(self) -> None:
        self._aborted = True
        if self._waiting is not None:
            self._waiting.cancel()


async def untar_chrooted(root: str, directory: str, options: archive.ExtractOptions,
                         chunks: AsyncIterator[bytes]) -> None:
    """Extract the uploaded tar into `directory` of the container's root.

    A new thread chroots itself and ends with the work: it never runs
    anything else (a pool thread would stay chrooted) and imports nothing.
    No process to start and no pipe to copy through."""
    loop = asyncio.get_running_loop()
    reader = _ChunkReader(chunks, loop)
    finished: asyncio.Future[None] = loop.create_future()

    def settle(error: BerthError | None) -> None:
        if error is None:
            finished.set_result(None)
        else:
            finished.set_exception(error)

    def extract() -> None:
        error: BerthError | None = None
        try:
            with _chroot_this_thread(root):
                archive.untar_into(directory, directory, reader.read, options)
        except BerthError as exc:
            error = exc
        except BaseException as exc:  # noqa: BLE001 - reported to the awaiting task
            error = Internal(f"extracting the archive failed: {exc}")
            error.__cause__ = exc
        loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=extract, name="berth-untar", daemon=True).start()
    try:
        await asyncio.shield(finished)
    except asyncio.CancelledError:
        reader.abort()
        await asyncio.wait([finished])
        finished.exception()   # retrieved: the caller sees the cancellation
        raise


class _Stopped(Exception):
    """The reader of a tar went away."""


async def tar_chrooted(root: str, make: Callable[[Callable[[bytes], object]], None]
                       ) -> AsyncIterator[bytes]:
    """The tar that `make(write)` writes, run in a thread chrooted into
    `root`, in chunks of about TAR_CHUNK bytes as it is made (at most a few
    waiting: a slow reader slows the tar down)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BerthError | None] = asyncio.Queue()
    slots = threading.Semaphore(_QUEUED_CHUNKS)
    stopped = threading.Event()

    def hand_over(chunk: bytes) -> None:
        slots.acquire()
        if stopped.is_set():
            raise _Stopped
        loop.call_soon_threadsafe(queue.put_nowait, chunk)

    def run() -> None:
        pending = bytearray()

        def write(data: bytes) -> None:
            pending.extend(data)
            if len(pending) >= TAR_CHUNK:
                hand_over(bytes(pending))
                pending.clear()

        end: BerthError | None = None
        try:
            with _chroot_this_thread(root):
                make(write)
                if pending:
                    hand_over(bytes(pending))
        except _Stopped:
            return
        except BerthError as exc:
            end = exc
        except BaseException as exc:  # noqa: BLE001 - reported to the reader
            end = Internal(f"archiving failed: {exc}")
            end.__cause__ = exc
        loop.call_soon_threadsafe(queue.put_nowait, end)

    threading.Thread(target=run, name="berth-tar", daemon=True).start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BerthError):
                raise item
            slots.release()
            yield item
    finally:
        stopped.set()
        slots.release()   # wakes a thread waiting for a slot: it stops
