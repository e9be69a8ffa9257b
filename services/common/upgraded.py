"""Taking over an aiohttp server connection after an HTTP upgrade (101).

From the 101 on, the connection carries another protocol (Docker's raw
hijacked stream, SPDY). The bytes aiohttp reads next go to a parser of our
own through `request.protocol.set_parser`, the hook aiohttp's WebSocket
support uses, set before the 101 goes out. Nothing is replayed: bytes a
client sent in the same packet as the request head would be lost (aiohttp's
C parser knows only the WebSocket upgrade); Docker clients and client-go
wait for the 101 first.
A client's half-close (EOF) is reported instead of closing the connection,
so output can keep flowing after the client stopped sending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web


class _Parser:
    """The payload parser aiohttp feeds with the connection's later bytes."""

    def __init__(self, on_data: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._on_data = on_data
        self._on_eof = on_eof

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._on_data(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._on_eof()


class _KeepOpenOnEOF(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol so that a client's
    half-close is reported instead of closing the connection (aiohttp's own
    protocol lets asyncio close the transport on EOF)."""

    def __init__(self, inner: asyncio.Protocol, on_eof: Callable[[], None]) -> None:
        self._inner = inner
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool:
        self._on_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def take_over_reading(request: web.Request, on_data: Callable[[bytes], None],
                      on_eof: Callable[[], None]) -> asyncio.Transport:
    """Send the connection's later bytes to `on_data` and its end (half-close
    or loss, possibly both) to `on_eof`; returns the transport. Call it
    before the 101 goes out: the client may answer at once."""
    transport = request.transport
    protocol = request.protocol
    assert transport is not None
    protocol.keep_alive(False)
    transport.set_protocol(_KeepOpenOnEOF(protocol, on_eof))
    protocol.set_parser(_Parser(on_data, on_eof))  # type: ignore[arg-type]
    return transport  # type: ignore[return-value]


async def close_connection(request: web.Request, response: web.StreamResponse) -> None:
    """End the response and close the connection."""
    try:
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    request.protocol.force_close()
    transport = request.transport
    if transport is not None:
        transport.close()
