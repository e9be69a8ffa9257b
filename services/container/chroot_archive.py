"""Tar and untar a container's files chrooted into the container's root
(what Docker's chrootarchive does).

Inside the chroot, absolute symlinks (in an archive or planted by the
container's processes, even while we walk) resolve to the container's own
root, so nothing is read from or written to the host.

Archives are extracted in a thread of the service that alone is chrooted
(`untar_chrooted`); tars are made by a child process:

  python -m services.container.chroot_archive tar ROOT PATH      tar of PATH to stdout
  python -m services.container.chroot_archive tree ROOT          tar of the whole root
  python -m services.container.chroot_archive layer ROOT         ROOT (an upperdir) as a layer

Exit status 2 with the message on stderr means the request was refused.
"""

from __future__ import annotations

import asyncio

# The modules tarfile imports lazily must be loaded before a chroot hides
# the interpreter's files.
import bz2  # noqa: F401
import concurrent.futures
import ctypes
import importlib.abc
import lzma  # noqa: F401
import os
import sys
import tarfile
import threading
import zlib  # noqa: F401
from collections.abc import AsyncIterator

from services.common.errors import BerthError, Internal
from services.container import archive, changes

REFUSED = 2
CLONE_FS = 0x200
_libc = ctypes.CDLL(None, use_errno=True)
_chrooted = threading.local()


class _NoImportInChroot(importlib.abc.MetaPathFinder):
    """Refuses any import in a chrooted thread: the module's file would be
    the container's, and its code would run in the service."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if getattr(_chrooted, "root", None):
            raise ImportError(f"import of {fullname} refused in a container's root")


sys.meta_path.insert(0, _NoImportInChroot())


def _chroot_this_thread(root: str) -> None:
    """Chroot the calling thread alone: unshare(CLONE_FS) gives it its own
    root and working directory (the rest of the process keeps the host's)."""
    if _libc.unshare(CLONE_FS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    _chrooted.root = root
    os.chroot(root)
    os.chdir("/")


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
            _chroot_this_thread(root)
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


def _no_owner_name_lookups() -> None:
    """tarfile names each entry's owner through NSS, which in the chroot
    reads the container's nsswitch.conf and loads the libnss modules it
    names, as root (CVE-2019-14271). The names are dropped anyway: this
    process looks none up."""
    tarfile.pwd = tarfile.grp = None


def main(argv: list[str]) -> int:
    command, root, *rest = argv
    _no_owner_name_lookups()
    os.chroot(root)
    os.chdir("/")
    out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)  # noqa: SIM115
    try:
        if command == "tar":
            archive.write_tar("/", rest[0], out.write)
        elif command == "tree":
            archive.write_tree_tar("/", out.write)
        elif command == "layer":
            changes.write_layer_tar("/", out.write)
        else:
            raise SystemExit(f"unknown command {command}")
        out.flush()
    except BerthError as exc:
        sys.stderr.write(exc.message)
        return REFUSED
    except BrokenPipeError:
        pass    # the reader went away
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
