"""SPDY/3.1 on an aiohttp request: the upgrade handshake, and the
remotecommand streams (error, stdin, stdout, stderr, resize) of one session.

The handshake is the Kubernetes one: `Connection: Upgrade`,
`Upgrade: SPDY/3.1`, the client's `X-Stream-Protocol-Version` list (one
header or several, comma separated) against ours, 403 with
`X-Accepted-Stream-Protocol-Versions` when none matches, else
101 Switching Protocols with the chosen version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.common.upgraded import close_connection, take_over_reading
from services.cri.streaming import remotecommand, spdy

log = logging.getLogger(__name__)

PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"
STREAM_CREATION_TIMEOUT = 30.0      # the kubelet's
CLOSE_GRACE = 10.0                  # how long we wait for the client to hang up
WRITE_BUFFER_HIGH = 4 << 20


def wants_spdy(request: web.Request) -> bool:
    return ("upgrade" in request.headers.get("Connection", "").lower()
            and "spdy/3.1" in request.headers.get("Upgrade", "").lower())


def offered_protocols(request: web.Request) -> list[str]:
    return [p.strip() for value in request.headers.getall(PROTOCOL_HEADER, [])
            for p in value.split(",") if p.strip()]


def negotiate(request: web.Request, supported: list[str]) -> str:
    """The first protocol the client offers that we support; HTTP errors
    as the kubelet answers them."""
    offered = offered_protocols(request)
    if not offered:
        raise web.HTTPBadRequest(
            text=f"unable to upgrade: header {PROTOCOL_HEADER} is missing or empty")
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise web.HTTPForbidden(
            headers=[(ACCEPTED_HEADER, p) for p in supported],
            text=f"unable to upgrade: unable to negotiate protocol: client supports "
                 f"{offered}, server accepts {supported}")
    return chosen


class SpdyConnection:
    """A request upgraded to SPDY: its server session and chosen protocol."""

    def __init__(self, request: web.Request, response: web.StreamResponse,
                 session: spdy.Session, protocol: str) -> None:
        self.request = request
        self.response = response
        self.session = session
        self.protocol = protocol
        self.hung_up = asyncio.Event()

    async def close(self) -> None:
        """GOAWAY, give the client a moment to hang up first (so our close
        cannot reset data it has not read), then close the connection."""
        await self.session.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.hung_up.wait(), CLOSE_GRACE)
        await close_connection(self.request, self.response)


async def upgrade(request: web.Request, supported: list[str]) -> SpdyConnection:
    """Answer 101 and run a server SPDY session on the connection."""
    if not wants_spdy(request):
        raise web.HTTPBadRequest(text="unable to upgrade: missing upgrade headers in request")
    protocol = negotiate(request, supported)
    response = web.StreamResponse(status=101, reason="Switching Protocols", headers={
        "Connection": "Upgrade", "Upgrade": "SPDY/3.1", PROTOCOL_HEADER: protocol})
    session = spdy.Session(response.write, server=True)
    connection = SpdyConnection(request, response, session, protocol)

    def on_data(data: bytes) -> None:
        try:
            session.feed(data)
        except spdy.SpdyError as exc:
            log.warning("SPDY protocol error from %s: %s", request.remote, exc)
            session.feed_eof()
            if request.transport is not None:
                request.transport.close()

    def on_eof() -> None:
        connection.hung_up.set()
        session.feed_eof()

    transport = take_over_reading(request, on_data, on_eof)
    # Let more than asyncio's default 64 KiB wait in the socket's write
    # buffer before writers wait: data flows without a gap per frame.
    transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
    session.pause_reading = transport.pause_reading
    session.resume_reading = transport.resume_reading
    await response.prepare(request)
    await session.start()
    return connection


async def accept_streams(session: spdy.Session, expected: set[str]) -> dict[str, spdy.Stream]:
    """Reply to the client's streams until one of each `expected` type came
    (the kubelet waits as long for them); a TimeoutError otherwise."""
    streams: dict[str, spdy.Stream] = {}

    async def gather() -> None:
        while not expected <= streams.keys():
            stream = await session.accept()
            if stream is None:
                raise ConnectionResetError("the client went away before opening its streams")
            await stream.reply()
            kind = stream.headers.get("streamtype", "")
            if kind in expected and kind not in streams:
                streams[kind] = stream
            else:
                await stream.abort(spdy.PROTOCOL_ERROR)

    await asyncio.wait_for(gather(), STREAM_CREATION_TIMEOUT)
    return streams


def expected_streams(protocol: str, stdin: bool, stdout: bool, stderr: bool,
                     tty: bool) -> set[str]:
    """The stream types a client of `protocol` opens (the kubelet's count)."""
    expected = {"error"}
    if stdin:
        expected.add("stdin")
    if stdout:
        expected.add("stdout")
    if stderr and not tty:
        expected.add("stderr")
    if tty and protocol not in (remotecommand.V2, remotecommand.V1):
        expected.add("resize")
    return expected


class SpdyIO:
    """remotecommand.IO over the streams of one SPDY session."""

    def __init__(self, protocol: str, streams: dict[str, spdy.Stream]) -> None:
        self.protocol = protocol
        self._streams = streams

    async def read_stdin(self) -> bytes:
        stream = self._streams.get("stdin")
        return await stream.read() if stream is not None else b""

    async def write_output(self, kind: int, data: bytes) -> None:
        stream = self._streams.get("stdout" if kind == remotecommand.STDOUT else "stderr")
        if stream is None:      # a TTY merges stderr into stdout
            stream = self._streams.get("stdout")
        if stream is not None:
            await stream.write(data)

    async def resizes(self) -> AsyncIterator[tuple[int, int]]:
        stream = self._streams.get("resize")
        if stream is None:
            return
        async for size in remotecommand.decode_resizes(stream.read):
            yield size

    async def finish(self, status: remotecommand.Status) -> None:
        with contextlib.suppress(ConnectionError):
            for kind in ("stdout", "stderr"):
                if kind in self._streams:
                    await self._streams[kind].close()
            error = self._streams["error"]
            payload = remotecommand.encode_status(self.protocol, status)
            if payload:
                await error.write(payload)
            await error.close()
