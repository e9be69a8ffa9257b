"""Relaying async streams between services: bytes coalesced into big
pieces, and any stream read ahead of its consumer.

Sockets hand bytes over in small pieces, and every gRPC message has its
cost, so relayed bytes travel in pieces of about 1 MiB. A relay that reads
one piece and then waits for it to be written leaves its source idle
meanwhile: aiohttp stops reading the socket once 128 KiB are buffered, and
gRPC only asks its peer for more once a message is read. A task that keeps
reading into a bounded queue lets both sides run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

CHUNK = 1 << 20

_END = object()


@dataclass
class _Failure:
    error: Exception


async def coalesced(pieces: AsyncIterator[bytes], size: int = CHUNK) -> AsyncIterator[bytes]:
    """`pieces` joined into pieces of about `size` bytes (each byte copied once)."""
    pending: list[bytes] = []
    pending_size = 0
    async for piece in pieces:
        pending.append(piece)
        pending_size += len(piece)
        if pending_size >= size:
            yield b"".join(pending)
            pending.clear()
            pending_size = 0
    if pending:
        yield b"".join(pending)


async def read_ahead(source: AsyncIterator[T], depth: int = 4) -> AsyncIterator[T]:
    """The items of `source`, up to `depth` of them read before they are
    asked for; an error of the source is raised where its item would be."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=depth)

    async def fill() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except Exception as exc:  # noqa: BLE001 - raised to the consumer
            await queue.put(_Failure(exc))
        else:
            await queue.put(_END)
        finally:
            # Stopped early (the consumer went away): the source stops too.
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    filler = asyncio.create_task(fill())
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        filler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filler
