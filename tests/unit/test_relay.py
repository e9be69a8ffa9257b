"""coalesced: small pieces joined into big ones. read_ahead: a stream read
ahead of its consumer, in order, errors where they happened, the source
stopped when the consumer stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.common.relay import coalesced, read_ahead


def test_items_arrive_in_order_read_ahead_up_to_the_depth() -> None:
    produced: list[int] = []

    async def source() -> AsyncIterator[int]:
        for item in range(10):
            produced.append(item)
            yield item

    async def consume() -> list[int]:
        stream = read_ahead(source(), depth=3)
        first = await anext(stream)
        await asyncio.sleep(0.01)
        ahead = len(produced)
        rest = [item async for item in stream]
        assert ahead == 5   # the first taken, three queued, one waiting to be put
        return [first, *rest]

    assert asyncio.run(consume()) == list(range(10))


def test_an_error_of_the_source_reaches_the_consumer_after_its_items() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        raise ValueError("broken upload")

    async def consume() -> list[int]:
        seen = []
        async for item in read_ahead(source()):
            seen.append(item)
        return seen

    with pytest.raises(ValueError, match="broken upload"):
        asyncio.run(consume())


def test_the_source_stops_when_the_consumer_does() -> None:
    async def consume() -> bool:
        stopped = asyncio.Event()

        async def source() -> AsyncIterator[int]:
            try:
                for item in range(100):
                    yield item
            finally:
                stopped.set()

        stream = read_ahead(source())
        assert await anext(stream) == 0
        await stream.aclose()
        return stopped.is_set()

    assert asyncio.run(consume())


def test_pieces_are_joined_to_the_size_and_the_rest_comes_last() -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"ab", b"cd", b"e", b"fgh", b"i"):
            yield piece

    async def joined() -> list[bytes]:
        return [chunk async for chunk in coalesced(pieces(), size=4)]

    assert asyncio.run(joined()) == [b"abcd", b"efgh", b"i"]
