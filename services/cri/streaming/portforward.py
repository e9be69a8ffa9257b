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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.common import netns
from services.cri.streaming import spdy
from services.cri.streaming.websocket import ChannelSocket

PROTOCOL = "portforward.k8s.io"
READ_SIZE = 1 << 20
STREAM_BUFFER = 4 << 20


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    netns_path: str             # "" for a host-network pod
    ports: list[int] = field(default_factory=list)


class DialError(Exception):
    pass


async def dial(request: PortForwardRequest, port: int) -> tuple[asyncio.StreamReader,
                                                                 asyncio.StreamWriter]:
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
        return await asyncio.open_connection(sock=sock, limit=STREAM_BUFFER)
    where = (f"namespace {request.netns_path}" if request.netns_path else "the host network")
    raise DialError(f"error forwarding port {port} to pod {request.sandbox_id}: failed to "
                    f"connect to localhost:{port} inside {where}: {'; '.join(failures)}")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               receive: Callable[[], Awaitable[bytes]],
               send: Callable[[bytes], Awaitable[None]],
               close: Callable[[], Awaitable[None]]) -> None:
    """Copy the client's bytes (`receive` until b"") to the pod connection
    and the pod's bytes to the client (`send`, then `close`), each side
    half-closing after its end, until both ends came."""

    async def to_pod() -> None:
        while chunk := await receive():
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def from_pod() -> None:
        while chunk := await reader.read(READ_SIZE):
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
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


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
                task = asyncio.create_task(_forward_pair(request, pair.data, pair.error))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forward_pair(request: PortForwardRequest, data: spdy.Stream,
                        error: spdy.Stream) -> None:
    try:
        port = parse_port(data.headers.get("port", ""))
        reader, writer = await dial(request, port)
    except DialError as exc:
        with contextlib.suppress(ConnectionError):
            await error.write(str(exc).encode())
            await error.close()
            await data.close()
        return
    await pipe(reader, writer, data.read, data.write, data.close)
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
            reader, writer = await dial(request, port)
        except DialError as exc:
            await channels.send(2 * index + 1, str(exc).encode())
            return

        async def send(data: bytes) -> None:
            await channels.send(2 * index, data)

        async def close() -> None:
            return None

        await pipe(reader, writer, inputs[index].get, send, close)

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
