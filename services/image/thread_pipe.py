"""A file-like sink a worker thread writes to while the event loop reads
chunks out of it, with backpressure and cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import IO

CHUNK = 1 << 20
_DONE = None


class Cancelled(Exception):
    """The reader went away; the writer thread stops at its next write."""


class ChunkPipe:
    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 8) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | None | BaseException] = asyncio.Queue(depth)
        self._buffer = bytearray()
        self._cancelled = False

    def _put(self, item: bytes | None | BaseException) -> None:
        future = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while True:
            if self._cancelled:
                future.cancel()
                raise Cancelled()
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                continue

    def write(self, data: bytes) -> int:
        if not self._buffer and len(data) >= CHUNK:  # a whole chunk: no copy
            self._put(bytes(data))
            return len(data)
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    async def run(self, work: Callable[[IO[bytes]], None]) -> AsyncIterator[bytes]:
        """Run `work(self)` in a thread and yield what it writes."""
        def target() -> None:
            try:
                work(self)  # type: ignore[arg-type]
                if self._buffer:
                    self._put(bytes(self._buffer))
                self._put(_DONE)
            except Cancelled:
                pass
            except BaseException as exc:  # handed to the reader, raised there
                with contextlib.suppress(Cancelled):
                    self._put(exc)

        task = asyncio.create_task(asyncio.to_thread(target))
        try:
            while (item := await self._queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._cancelled = True
            await task
