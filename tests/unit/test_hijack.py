"""The connection hijack on a real aiohttp server over a unix socket."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest
from aiohttp import web

from berth.container.v1 import container_pb2 as pb
from services.common.errors import Internal
from services.gateway.hijack import STDOUT, frame_header, hijack, relay


async def echo_upper(request: web.Request) -> web.StreamResponse:
    """Echo stdin upper-cased; say bye when the client half-closes."""
    body = await request.read()
    connection = await hijack(request, multiplexed=request.query.get("mux") == "1")
    if body:
        await connection.write(STDOUT, b"body:" + body)
    async for chunk in connection.stdin():
        await connection.write(STDOUT, chunk.upper())
    await connection.write(STDOUT, b"bye")
    await connection.close()
    return connection.response


class FailingCall:
    """A container-service IO call that sends one frame, then fails."""

    def __init__(self) -> None:
        self.cancelled = False

    async def __aiter__(self):
        yield pb.IOFrame(stream=pb.IOFrame.STDOUT, data=b"partial ")
        raise Internal("container service: exec start failed")

    async def write(self, message: object) -> None:
        pass

    def cancel(self) -> None:
        self.cancelled = True


async def relay_failing_call(request: web.Request) -> web.StreamResponse:
    connection = await hijack(request, multiplexed=False)
    await relay(connection, FailingCall(), None)  # type: ignore[arg-type]
    return connection.response


@pytest.fixture
def server(tmp_path: Path):
    path = tmp_path / "hijack.sock"
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/attach", echo_upper)
    app.router.add_post("/failing", relay_failing_call)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.UnixSite(runner, str(path)).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield path
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def connect(path: Path, request: bytes) -> tuple[socket.socket, bytes, bytes]:
    """Send `request`; return the socket, the response head and any bytes after it."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(path))
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head, rest


def read_until_closed(sock: socket.socket, already: bytes) -> bytes:
    data = already
    while chunk := sock.recv(4096):
        data += chunk
    return data


UPGRADE = (b"POST /attach%s HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
           b"Upgrade: tcp\r\nContent-Length: %d\r\n\r\n%s")


def test_upgrade_streams_both_ways_and_half_close_ends_stdin(server: Path) -> None:
    sock, head, rest = connect(server, UPGRADE % (b"", 0, b""))
    assert head.startswith(b"HTTP/1.1 101 UPGRADED")
    assert b"Upgrade: tcp" in head
    assert b"application/vnd.docker.raw-stream" in head
    sock.sendall(b"hello ")
    received = rest
    while len(received) < len(b"HELLO "):
        received += sock.recv(4096)
    assert received == b"HELLO "
    sock.sendall(b"world")
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock, b"") == b"WORLDbye"
    sock.close()


def test_client_that_goes_away_ends_stdin(server: Path) -> None:
    sock, head, _ = connect(server, UPGRADE % (b"", 0, b""))
    assert head.startswith(b"HTTP/1.1 101")
    sock.close()


def test_upgrade_after_a_body_with_stream_headers(server: Path) -> None:
    body = json.dumps({"Detach": False}).encode()
    sock, head, rest = connect(server, UPGRADE % (b"?mux=1", len(body), body))
    assert head.startswith(b"HTTP/1.1 101")
    assert b"application/vnd.docker.multiplexed-stream" in head
    sock.sendall(b"abc")
    sock.shutdown(socket.SHUT_WR)
    out = read_until_closed(sock, rest)
    expected = b"".join(frame_header(1, len(part)) + part
                        for part in (b"body:" + body, b"ABC", b"bye"))
    assert out == expected
    sock.close()


def test_without_upgrade_answers_200_and_streams(server: Path) -> None:
    sock, head, rest = connect(
        server, b"POST /attach HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"bye" in read_until_closed(sock, rest)
    sock.close()


def test_a_call_that_fails_after_the_upgrade_writes_its_error_to_the_client(
        server: Path) -> None:
    request = UPGRADE.replace(b"/attach%s", b"/failing%s") % (b"", 0, b"")
    sock, head, rest = connect(server, request)
    assert head.startswith(b"HTTP/1.1 101")
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock, rest) == b"partial container service: exec start failed\r\n"
    sock.close()
