"""Docker's connection hijack on aiohttp, shared by attach and exec start.

A client that sends `Upgrade: tcp` gets `101 UPGRADED`; from then on the
connection is a raw byte stream both ways: stdin from the client, output to
it (with 8-byte stream headers when the process has no TTY). The bytes after
the request go to our own parser through `request.protocol.set_parser`, the
hook aiohttp's WebSocket support uses (services/common/upgraded.py). A
client that closes its write side (half-close) ends stdin while output
keeps flowing; the end of the output closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from services.common.errors import BerthError
from services.common.peers import PeerStream
from services.common.upgraded import close_connection, take_over_reading

RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

STDIN, STDOUT, STDERR = 0, 1, 2

# Pause reading from the client while this many stdin chunks wait unsent.
_STDIN_HIGH_WATER = 64
_STDIN_LOW_WATER = 16


def frame_header(stream: int, size: int) -> bytes:
    """Docker's stdcopy header: [stream, 0, 0, 0, size as big-endian uint32]."""
    return struct.pack(">BxxxI", stream, size)


def wants_upgrade(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "tcp"
            and "upgrade" in request.headers.get("Connection", "").lower())


class HijackedConnection:
    """A hijacked client connection: stdin in, framed or raw output out."""

    def __init__(self, request: web.Request, response: web.StreamResponse,
                 multiplexed: bool, upgraded: bool) -> None:
        self.request = request
        self.response = response
        self.multiplexed = multiplexed
        self.upgraded = upgraded
        self._stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = False
        if upgraded:
            self._take_over_reading()
        else:
            self._stdin.put_nowait(None)

    def _take_over_reading(self) -> None:
        self._transport = take_over_reading(self.request, self._on_stdin,
                                            lambda: self._stdin.put_nowait(None))

    def _on_stdin(self, data: bytes) -> None:
        self._stdin.put_nowait(data)
        if self._stdin.qsize() >= _STDIN_HIGH_WATER and self._transport.is_reading():
            self._transport.pause_reading()

    async def stdin(self) -> AsyncIterator[bytes]:
        """The client's bytes until it closes its write side or goes away."""
        transport = self.request.transport
        while (chunk := await self._stdin.get()) is not None:
            if (transport is not None and not transport.is_reading()
                    and self._stdin.qsize() <= _STDIN_LOW_WATER and not transport.is_closing()):
                transport.resume_reading()
            yield chunk

    async def write(self, stream: int, data: bytes) -> None:
        """Send output of `stream` (STDOUT or STDERR); raises ConnectionError
        when the client has gone away."""
        if not data:
            return
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("client connection closed")
        if self.multiplexed:
            data = frame_header(stream, len(data)) + data
        await self.response.write(data)

    async def close(self) -> None:
        """End the output and close the connection."""
        if self._closed:
            return
        self._closed = True
        await close_connection(self.request, self.response)


async def hijack(request: web.Request, multiplexed: bool) -> HijackedConnection:
    """Answer the request as Docker does before streaming: 101 UPGRADED when
    the client asked for `Upgrade: tcp`, else 200, and hand back the connection."""
    content_type = MULTIPLEXED_STREAM if multiplexed else RAW_STREAM
    upgraded = wants_upgrade(request)
    if upgraded:
        response = web.StreamResponse(status=101, reason="UPGRADED", headers={
            "Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        response.force_close()
    # Take over reading before the 101 goes out: the client may answer at once.
    connection = HijackedConnection(request, response, multiplexed, upgraded)
    await response.prepare(request)
    return connection


async def relay(connection: HijackedConnection, call: PeerStream,
                stdin_message: Callable[[bytes], Any] | None,
                close_stdin_message: Any = None) -> Any | None:
    """Copy the client's stdin into a bidirectional IO call (when
    `stdin_message` is given) and the call's IOFrames back to the client,
    then close the connection. Returns the call's last frame (it carries
    `detached` and an exec's exit code), or None when the client went away
    or the call failed after the headers were sent (its error is written
    to the client as output)."""

    async def forward_stdin() -> None:
        assert stdin_message is not None
        async for chunk in connection.stdin():
            await call.write(stdin_message(chunk))
        if close_stdin_message is not None:
            await call.write(close_stdin_message)

    stdin_task = asyncio.create_task(forward_stdin()) if stdin_message else None
    last = None
    try:
        async for frame in call:
            last = frame
            await connection.write(frame.stream + 1, frame.data)
    except ConnectionError:
        call.cancel()
        last = None
    except BerthError as error:
        call.cancel()
        last = None
        # Past the 101 there is no status to answer with: Docker's daemon
        # writes the error into the stream, where the client shows it.
        with contextlib.suppress(ConnectionError):
            await connection.write(STDOUT, f"{error.message}\r\n".encode())
    finally:
        if stdin_task is not None:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stdin_task
        await connection.close()
    return last
