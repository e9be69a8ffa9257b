"""Port forwarding into a pod sandbox's network namespace.

portforward.k8s.io over SPDY: per connection the client opens an error and
a data stream with the same `requestID` header and the pod `port`; we dial
localhost:port from inside the sandbox's netns (the host's for host-network
pods), copy both ways, and write a failure's text on the error stream.
Over WebSocket (v4.channel.k8s.io), each requested port has a data and an
error channel (2i, 2i+1), each first carrying the port number.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.common import netns
from services.common.tasks import keep_task
from services.cri.streaming import spdy
from services.cri.streaming.websocket import ChannelSocket

PROTOCOL = "portforward.k8s.io"
BUFFER_LIMIT = 4 << 20     # bytes from the pod that may wait unsent


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    netns_path: str             # "" for a host-network pod
    ports: list[int] = field(default_factory=list)


class DialError(Exception):
    pass


class PodConnection(asyncio.Protocol):
    """The pod side of a forwarded connection. Received chunks are handed on
    as they came (asyncio's StreamReader would copy every byte twice);
    reading pauses while more than BUFFER_LIMIT waits unread."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self._readable.set()
        if self._buffered >= BUFFER_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._ended = True
        self._readable.set()
        return True         # keep our direction open: a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._readable.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self) -> bytes:
        """The next chunk from the pod; b"" at its end."""
        while not self._chunks:
            if self._ended:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < BUFFER_LIMIT // 2 and self.transport is not None:
            self.transport.resume_reading()
        return chunk

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the pod closed the connection")
        self.transport.write(data)
        await self._writable.wait()

    def write_eof(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def dial(request: PortForwardRequest, port: int) -> PodConnection:
    """Connect to localhost:`port` inside the sandbox: IPv4, then IPv6."""
    loop = asyncio.get_running_loop()
    failures = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = await asyncio.to_thread(netns.socket_in, request.netns_path, family)
        except OSError as exc:
            failures.append(f"{host}: {exc.strerror or exc}")
            continue
        try:
            await loop.sock_connect(sock, (host, port))
        except OSError as exc:
            sock.close()
            failures.append(f"{host}: {os.strerror(exc.errno) if exc.errno else exc}")
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, connection = await loop.create_connection(PodConnection, sock=sock)
        return connection
    where = (f"namespace {request.netns_path}" if request.netns_path else "the host network")
    raise DialError(f"error forwarding port {port} to pod {request.sandbox_id}: failed to "
                    f"connect to localhost:{port} inside {where}: {'; '.join(failures)}")


async def pipe(pod: PodConnection, receive: Callable[[], Awaitable[bytes]],
               send: Callable[[bytes], Awaitable[None]],
               close: Callable[[], Awaitable[None]]) -> None:
    """Copy the client's bytes (`receive` until b"") to the pod connection
    and the pod's bytes to the client (`send`, then `close`), each side
    half-closing after its end, until both ends came."""

    async def to_pod() -> None:
        while chunk := await receive():
            await pod.write(chunk)
        pod.write_eof()

    async def from_pod() -> None:
        while chunk := await pod.read():
            await send(chunk)
        await close()

    tasks = [asyncio.create_task(to_pod()), asyncio.create_task(from_pod())]
    try:
        await asyncio.gather(*tasks)
    except (ConnectionError, OSError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
        pod.close()


def parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise DialError(f"invalid port {value!r}")
    return port


@dataclass
class _Pair:
    data: spdy.Stream | None = None
    error: spdy.Stream | None = None


def _request_id(stream: spdy.Stream) -> str:
    """The requestID header; clients before it paired error stream N with
    data stream N+2 (the kubelet's fallback)."""
    if "requestid" in stream.headers:
        return stream.headers["requestid"]
    offset = 2 if stream.headers.get("streamtype") == "data" else 0
    return str(stream.id - offset)


async def serve_spdy(session: spdy.Session, request: PortForwardRequest) -> None:
    """Forward every stream pair the client opens until the session ends."""
    pairs: dict[str, _Pair] = {}
    tasks: set[asyncio.Task] = set()
    try:
        while (stream := await session.accept()) is not None:
            await stream.reply()
            kind = stream.headers.get("streamtype")
            if kind not in ("data", "error"):
                await stream.abort(spdy.PROTOCOL_ERROR)
                continue
            request_id = _request_id(stream)
            pair = pairs.setdefault(request_id, _Pair())
            setattr(pair, kind, stream)
            if pair.data is not None and pair.error is not None:
                del pairs[request_id]
                keep_task(tasks, asyncio.create_task(
                    _forward_pair(request, pair.data, pair.error)))
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forward_pair(request: PortForwardRequest, data: spdy.Stream,
                        error: spdy.Stream) -> None:
    try:
        port = parse_port(data.headers.get("port", ""))
        pod = await dial(request, port)
    except DialError as exc:
        with contextlib.suppress(ConnectionError):
            await error.write(str(exc).encode())
            await error.close()
            await data.close()
        return
    await pipe(pod, data.read, data.write, data.close)
    with contextlib.suppress(ConnectionError):
        await error.close()


async def serve_websocket(channels: ChannelSocket, request: PortForwardRequest) -> None:
    """v4.channel.k8s.io: one connection per requested port."""
    inputs = [asyncio.Queue() for _ in request.ports]
    for index, port in enumerate(request.ports):
        for channel in (2 * index, 2 * index + 1):
            await channels.send(channel, struct.pack("<H", port))

    async def read() -> None:
        try:
            async for channel, data in channels.messages():
                if data and channel % 2 == 0 and channel // 2 < len(inputs):
                    inputs[channel // 2].put_nowait(data)
        finally:
            for queue in inputs:
                queue.put_nowait(b"")

    async def forward(index: int, port: int) -> None:
        try:
            pod = await dial(request, port)
        except DialError as exc:
            await channels.send(2 * index + 1, str(exc).encode())
            return

        async def send(data: bytes) -> None:
            await channels.send(2 * index, data)

        async def close() -> None:
            return None

        await pipe(pod, inputs[index].get, send, close)

    reader_task = asyncio.create_task(read())
    try:
        await asyncio.gather(*(forward(i, p) for i, p in enumerate(request.ports)),
                             return_exceptions=True)
    finally:
        reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader_task
        with contextlib.suppress(ConnectionError):
            await channels.socket.close()
