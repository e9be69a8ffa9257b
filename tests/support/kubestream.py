"""A minimal Kubernetes streaming client: SPDY/3.1 (with berth's own SPDY
module) and WebSocket (aiohttp), for exec, attach and port-forward tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from services.cri.streaming import spdy


class UpgradeRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused: {status} {body!r}")
        self.status = status
        self.body = body


class SpdyClient:
    """A client SPDY session on an upgraded HTTP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 protocol: str, rest: bytes) -> None:
        self.protocol = protocol
        self._writer = writer
        self.session = spdy.Session(self._send, server=False)
        if rest:
            self.session.feed(rest)
        self._reader_task = asyncio.create_task(self._read(reader))

    async def _send(self, data: bytes | memoryview) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(1 << 20):
                self.session.feed(data)
        except (ConnectionError, spdy.SpdyError):
            pass
        finally:
            self.session.feed_eof()

    @classmethod
    async def connect(cls, url: str, protocols: list[str],
                      context: ssl.SSLContext | None = None) -> SpdyClient:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port, ssl=context if parts.scheme == "https" else None,
            limit=4 << 20)
        head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                + "".join(f"X-Stream-Protocol-Version: {p}\r\n" for p in protocols)
                + "Content-Length: 0\r\n\r\n")
        writer.write(head.encode())
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if status != 101:
            body = await reader.read(int(headers.get("content-length", "0") or 0))
            writer.close()
            raise UpgradeRefused(status, body)
        client = cls(reader, writer, headers.get("x-stream-protocol-version", ""), b"")
        await client.session.start()
        return client

    async def close(self) -> None:
        await self.session.close()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task


@dataclass
class CommandResult:
    stdout: bytes = b""
    stderr: bytes = b""
    error: bytes = b""
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> dict:
        return json.loads(self.error) if self.error else {}

    @property
    def exit_code(self) -> int:
        status = self.status
        if status.get("status") == "Success":
            return 0
        for cause in status.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"])
        raise AssertionError(f"no exit code in {status}")


class RemoteCommand:
    """The streams of one exec or attach over SPDY, as client-go opens them."""

    def __init__(self, client: SpdyClient, streams: dict[str, spdy.Stream]) -> None:
        self.client = client
        self.streams = streams

    @classmethod
    async def open(cls, url: str, *, stdin: bool, stdout: bool = True, stderr: bool = True,
                   tty: bool = False, protocols: tuple[str, ...] = ("v4.channel.k8s.io",),
                   context: ssl.SSLContext | None = None) -> RemoteCommand:
        client = await SpdyClient.connect(url, list(protocols), context)
        kinds = ["error"] + (["stdin"] if stdin else []) + (["stdout"] if stdout else [])
        kinds += ["stderr"] if stderr and not tty else []
        kinds += ["resize"] if tty and client.protocol != "v2.channel.k8s.io" else []
        streams = {kind: await client.session.open({"streamtype": kind}) for kind in kinds}
        return cls(client, streams)

    async def resize(self, width: int, height: int) -> None:
        await self.streams["resize"].write(
            json.dumps({"Width": width, "Height": height}).encode() + b"\n")

    async def read_until(self, kind: str, wanted: bytes, seen: bytearray) -> bytes:
        while wanted not in seen:
            chunk = await self.streams[kind].read()
            if not chunk:
                raise AssertionError(f"{kind} ended before {wanted!r}: {bytes(seen)!r}")
            seen += chunk
        return bytes(seen)

    async def finish(self, stdin: bytes | None = None) -> CommandResult:
        """Send `stdin` (then close it), read every output to its end."""
        if "stdin" in self.streams:
            if stdin:
                await self.streams["stdin"].write(stdin)
            await self.streams["stdin"].close()
        outputs = await asyncio.gather(*(
            self.streams[k].read_all() if k in self.streams else _nothing()
            for k in ("stdout", "stderr", "error")))
        await self.client.close()
        return CommandResult(*outputs)


async def _nothing() -> bytes:
    return b""


async def spdy_command(url: str, stdin: bytes | None = None, **options) -> CommandResult:
    command = await RemoteCommand.open(url, stdin=stdin is not None, **options)
    return await command.finish(stdin)


async def websocket_command(url: str, stdin: bytes | None = None,
                            protocol: str = "v5.channel.k8s.io") -> CommandResult:
    """Exec or attach over WebSocket: stdin then (v5) its close signal."""
    result = CommandResult()
    buffers = {1: bytearray(), 2: bytearray(), 3: bytearray()}
    async with aiohttp.ClientSession() as http, http.ws_connect(
            url.replace("http", "ws", 1), protocols=[protocol]) as socket:
        result.extra["protocol"] = socket.protocol
        if stdin is not None:
            await socket.send_bytes(b"\x00" + stdin)
            await socket.send_bytes(b"\xff\x00")
        async for message in socket:
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                buffers[message.data[0]] += message.data[1:]
    result.stdout, result.stderr, result.error = (bytes(buffers[i]) for i in (1, 2, 3))
    return result


class PortForward:
    """portforward.k8s.io over a SPDY session (direct or tunnelled in WebSocket)."""

    def __init__(self, session: spdy.Session, close) -> None:
        self.session = session
        self._close = close
        self._next_request = 0

    @classmethod
    async def spdy(cls, url: str) -> PortForward:
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        return cls(client.session, client.close)

    @classmethod
    async def tunnelled(cls, url: str) -> PortForward:
        http = aiohttp.ClientSession()
        socket = await http.ws_connect(url.replace("http", "ws", 1),
                                       protocols=["SPDY/3.1+portforward.k8s.io"])
        assert socket.protocol == "SPDY/3.1+portforward.k8s.io", socket.protocol
        session = spdy.Session(socket.send_bytes, server=False)

        async def pump() -> None:
            async for message in socket:
                if message.type == aiohttp.WSMsgType.BINARY:
                    session.feed(message.data)
            session.feed_eof()

        reader = asyncio.create_task(pump())
        await session.start()

        async def close() -> None:
            await session.close()
            await socket.close()
            await reader
            await http.close()

        return cls(session, close)

    async def request(self, port: int, payload: bytes) -> tuple[bytes, bytes]:
        """One connection to `port`: send `payload`, half-close, read the
        reply to its end; returns (data, error stream text)."""
        self._next_request += 1
        headers = {"port": str(port), "requestid": str(self._next_request)}
        error = await self.session.open({**headers, "streamtype": "error"})
        await error.close()
        data = await self.session.open({**headers, "streamtype": "data"})
        await data.write(payload)
        await data.close()
        received, problem = await asyncio.gather(data.read_all(), error.read_all())
        return received, problem

    async def close(self) -> None:
        await self._close()
