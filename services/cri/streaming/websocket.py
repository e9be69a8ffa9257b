"""The Kubernetes channel protocols over WebSocket (aiohttp).

Every binary message starts with its channel number: 0 stdin, 1 stdout,
2 stderr, 3 error, 4 resize for remotecommand; the base64 variants send
text messages with the channel as an ASCII digit and the data base64
encoded. v5.channel.k8s.io adds the close signal: [255, channel] half-closes
a channel (the client's stdin). `SPDY/3.1+portforward.k8s.io` carries a
SPDY session in binary messages instead (client-go's tunnelling).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web

from services.cri.streaming import remotecommand, spdy

CLOSE_SIGNAL = 255
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4

BASE64_PROTOCOLS = {"base64.channel.k8s.io", "v4.base64.channel.k8s.io"}
REMOTECOMMAND_PROTOCOLS = [remotecommand.V5, remotecommand.V4, "v4.base64.channel.k8s.io",
                           remotecommand.V1, "base64.channel.k8s.io"]
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"


def wants_websocket(request: web.Request) -> bool:
    return (request.headers.get("Upgrade", "").lower() == "websocket"
            and "upgrade" in request.headers.get("Connection", "").lower())


def offered_protocols(request: web.Request) -> list[str]:
    return [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()]


async def accept(request: web.Request, supported: list[str]) -> web.WebSocketResponse:
    """Upgrade to WebSocket with the first of the client's subprotocols we
    support (none when the client offers none); 400 if it offers only others."""
    offered = offered_protocols(request)
    if offered and not any(p in supported for p in offered):
        raise web.HTTPBadRequest(
            text=f"requested protocol(s) are not supported: {offered}; supports {supported}")
    socket = web.WebSocketResponse(protocols=supported, max_msg_size=0, heartbeat=None)
    await socket.prepare(request)
    return socket


class ChannelSocket:
    """Channel-numbered messages on a WebSocket."""

    def __init__(self, socket: web.WebSocketResponse) -> None:
        self.socket = socket
        self.protocol = socket.ws_protocol or ""
        self.base64 = self.protocol in BASE64_PROTOCOLS
        self.close_signal = self.protocol == remotecommand.V5

    async def send(self, channel: int, data: bytes) -> None:
        if self.base64:
            await self.socket.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            await self.socket.send_bytes(bytes([channel]) + data)

    async def messages(self) -> AsyncIterator[tuple[int, bytes | None]]:
        """(channel, data) per message; data None for a v5 close signal."""
        async for message in self.socket:
            if message.type == WSMsgType.BINARY and not self.base64:
                raw = message.data
                if not raw:
                    continue
                if self.close_signal and raw[0] == CLOSE_SIGNAL and len(raw) == 2:
                    yield raw[1], None
                    continue
                yield raw[0], raw[1:]
            elif message.type == WSMsgType.TEXT and self.base64 and message.data:
                yield ord(message.data[0]) - ord("0"), base64.b64decode(message.data[1:])


class WebSocketIO:
    """remotecommand.IO over a channel socket."""

    def __init__(self, channels: ChannelSocket, stdout: bool, stderr: bool) -> None:
        self._channels = channels
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self._resize: asyncio.Queue[bytes] = asyncio.Queue()
        self._stdout = stdout
        self._stderr = stderr
        self._reader = asyncio.create_task(self._read())

    async def open(self) -> None:
        """An empty message on the lowest channel we write: the client knows
        the session is established (the kubelet does the same)."""
        channel = STDOUT if self._stdout else STDERR if self._stderr else ERROR
        await self._channels.send(channel, b"")

    async def _read(self) -> None:
        try:
            async for channel, data in self._channels.messages():
                queue = {STDIN: self._stdin, RESIZE: self._resize}.get(channel)
                if queue is not None:
                    queue.put_nowait(data if data is not None else b"")
        finally:
            self._stdin.put_nowait(b"")
            self._resize.put_nowait(b"")

    async def read_stdin(self) -> bytes:
        return await self._stdin.get()

    async def write_output(self, kind: int, data: bytes) -> None:
        await self._channels.send(kind, data)

    async def resizes(self) -> AsyncIterator[tuple[int, int]]:
        async for size in remotecommand.decode_resizes(self._resize.get):
            yield size

    async def finish(self, status: remotecommand.Status) -> None:
        payload = remotecommand.encode_status(status_protocol(self._channels), status)
        with contextlib.suppress(ConnectionError):
            if payload:
                await self._channels.send(ERROR, payload)
            await self._channels.socket.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def status_protocol(channels: ChannelSocket) -> str:
    """The remotecommand version whose status form this socket uses."""
    if channels.protocol == remotecommand.V5:
        return remotecommand.V5
    if channels.protocol.startswith("v4."):
        return remotecommand.V4
    return remotecommand.V1


class TunnelledSession:
    """A SPDY session carried in binary WebSocket messages."""

    def __init__(self, socket: web.WebSocketResponse) -> None:
        self.socket = socket
        self.session = spdy.Session(socket.send_bytes, server=True)
        self._resume = asyncio.Event()
        self._resume.set()
        self.session.pause_reading = self._resume.clear
        self.session.resume_reading = self._resume.set

    async def pump(self) -> None:
        """Feed the client's messages to the session until it hangs up."""
        try:
            async for message in self.socket:
                if message.type != WSMsgType.BINARY:
                    break
                self.session.feed(message.data)
                await self._resume.wait()
        except spdy.SpdyError:
            pass
        finally:
            self.session.feed_eof()
