"""The CRI streaming server on a real engine: exec and attach through the
container service, port-forward into a container's network namespace, over
SPDY/3.1 and WebSocket, with the minimal client of tests/support."""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from berth.container.v1.container_pb2_grpc import ContainerServiceStub
from services.common.config import Config
from services.common.peers import PeerClient
from services.cri.streaming import StreamingServer
from tests.support.engine import Engine
from tests.support.kubestream import (
    PortForward,
    RemoteCommand,
    UpgradeRefused,
    spdy_command,
    websocket_command,
)
from tests.support.polling import wait_for
from tests.support.tls import make_certs

PAGE = b"berth streaming " * 4096          # 64 KiB the pod's httpd serves


@asynccontextmanager
async def streaming_server(engine: Engine, **options) -> AsyncIterator[StreamingServer]:
    container = PeerClient.connect(Config(exec_root=engine.exec_root), "container",
                                   ContainerServiceStub)
    server = StreamingServer(container, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await container.close()


def run(engine: Engine, scenario: Callable[[StreamingServer], Awaitable[None]],
        **options) -> None:
    async def main() -> None:
        async with streaming_server(engine, **options) as server:
            await scenario(server)
    asyncio.run(asyncio.wait_for(main(), 120))


@pytest.fixture(scope="module")
def sleeper(engine: Engine, busybox: str) -> Iterator[str]:
    """A running container with a network namespace and an httpd on 8080."""
    script = ("mkdir -p /www && "
              f"printf '%.0s{PAGE[:16].decode()}' $(seq 4096) > /www/index.html && "
              "exec httpd -f -p 8080 -h /www")
    cid = engine.docker("run", "-d", busybox, "sh", "-c", script).stdout.decode().strip()
    yield cid
    engine.docker("rm", "-f", cid, check=False)


def netns_of(engine: Engine, cid: str) -> str:
    return engine.docker("inspect", "-f", "{{.NetworkSettings.SandboxKey}}",
                         cid).stdout.decode().strip()


def test_exec_without_tty_separates_stderr_and_reports_the_exit_code(
        engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        cmd = ["sh", "-c", "echo out; echo err >&2; exit 3"]
        result = await spdy_command(server.exec_url(sleeper, cmd, False, False, True, True))
        assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
        assert result.status.get("reason") == "NonZeroExitCode", result.status
        assert result.exit_code == 3
        ok = await spdy_command(server.exec_url(sleeper, ["true"], False, False, True, True))
        assert ok.status == {"metadata": {}, "status": "Success"}

    run(engine, scenario)


def test_exec_stdin_until_closed(engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["sh", "-c", "wc -c; cat >&2"], False, True, True, True)
        result = await spdy_command(url, stdin=b"x" * 300000)
        assert result.stdout.strip() == b"300000"
        assert result.exit_code == 0

    run(engine, scenario)


def test_exec_v3_and_v2_clients_get_the_error_as_text(engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        for protocol in ("v3.channel.k8s.io", "v2.channel.k8s.io"):
            url = server.exec_url(sleeper, ["sh", "-c", "exit 5"], False, False, True, True)
            result = await spdy_command(url, protocols=(protocol,))
            assert b"exit code 5" in result.error

    run(engine, scenario)


def test_exec_with_tty_and_resize(engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["sh"], True, True, True, False)
        command = await RemoteCommand.open(url, stdin=True, tty=True)
        assert "stderr" not in command.streams
        await command.resize(width=123, height=45)
        seen = bytearray()
        await command.read_until("stdout", b"# ", seen)
        await command.streams["stdin"].write(b"stty size; exit 7\n")
        result = await command.finish()
        assert b"45 123" in seen + result.stdout
        assert result.exit_code == 7

    run(engine, scenario)


def test_attach_with_stdin(engine: Engine, busybox: str) -> None:
    cid = engine.docker("run", "-d", "-i", busybox, "sh", "-c",
                        "read line; echo got:$line; echo bye >&2").stdout.decode().strip()
    try:
        async def scenario(server: StreamingServer) -> None:
            url = server.attach_url(cid, False, True, True, True)
            result = await spdy_command(url, stdin=b"hello\n")
            assert result.stdout == b"got:hello\n"
            assert result.stderr == b"bye\n"
            assert result.status["status"] == "Success"

        run(engine, scenario)
    finally:
        engine.docker("rm", "-f", cid, check=False)


# ctrl-p ctrl-q, Docker's default detach keys, and a byte after them; a raw
# terminal passes them on (a cooked one would take ctrl-q as XON).
DETACH_BYTES = b"\x10\x11x"
READ_THREE_RAW = "stty raw -echo; echo ready; head -c 3 | od -An -tx1"


def test_exec_with_tty_passes_docker_detach_keys_to_the_process(
        engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["sh", "-c", READ_THREE_RAW], True, True, True, False)
        command = await RemoteCommand.open(url, stdin=True, tty=True)
        seen = bytearray()
        await command.read_until("stdout", b"ready", seen)
        await command.streams["stdin"].write(DETACH_BYTES)
        await command.read_until("stdout", b"10 11 78", seen)
        result = await command.finish()
        assert result.exit_code == 0

    run(engine, scenario)


def test_attach_with_tty_passes_docker_detach_keys_to_the_process(
        engine: Engine, busybox: str) -> None:
    cid = engine.docker("run", "-d", "-it", busybox, "sh", "-c",
                        f"{READ_THREE_RAW}; touch /tmp/read; sleep 1000"
                        ).stdout.decode().strip()
    try:
        wait_for(lambda: b"ready" in engine.docker("logs", cid).stdout)

        async def scenario(server: StreamingServer) -> None:
            url = server.attach_url(cid, True, True, True, False)
            command = await RemoteCommand.open(url, stdin=True, tty=True)
            await command.streams["stdin"].write(DETACH_BYTES)
            await command.read_until("stdout", b"10 11 78", bytearray())

        run(engine, scenario)
        assert engine.docker("exec", cid, "test", "-f", "/tmp/read").returncode == 0
    finally:
        engine.docker("rm", "-f", cid, check=False)


def test_exec_over_websocket_v5_with_close_signal(engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["sh", "-c", "cat; echo err >&2; exit 2"], False, True,
                              True, True)
        result = await websocket_command(url, stdin=b"through websocket")
        assert result.extra["protocol"] == "v5.channel.k8s.io"
        assert result.stdout == b"through websocket"
        assert result.stderr == b"err\n"
        assert result.exit_code == 2

        url = server.exec_url(sleeper, ["echo", "v4"], False, False, True, True)
        result = await websocket_command(url, protocol="v4.channel.k8s.io")
        assert result.stdout == b"v4\n" and result.status["status"] == "Success"

    run(engine, scenario)


def test_tokens_are_single_use(engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["true"], False, False, True, True)
        await spdy_command(url)
        for used in (url, url.rsplit("/", 1)[0] + "/unknown",
                     url.replace("/exec/", "/attach/")):
            with pytest.raises(UpgradeRefused) as refused:
                await spdy_command(used)
            assert refused.value.status == 404
        url = server.exec_url(sleeper, ["true"], False, False, True, True)
        with pytest.raises(UpgradeRefused) as refused:
            await spdy_command(url, protocols=("v9.channel.k8s.io",))
        assert refused.value.status == 403

    run(engine, scenario)


HTTP_GET = b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n"


def test_port_forward_over_spdy_into_the_pod(engine: Engine, sleeper: str) -> None:
    netns = netns_of(engine, sleeper)

    async def scenario(server: StreamingServer) -> None:
        forward = await PortForward.spdy(server.portforward_url(sleeper, netns, [8080]))
        try:
            replies = await asyncio.gather(*(forward.request(8080, HTTP_GET)
                                             for _ in range(4)))
            for data, problem in replies:
                assert problem == b""
                assert data.startswith(b"HTTP/1.") and data.endswith(PAGE)
            data, problem = await forward.request(8081, b"")
            assert data == b""
            assert b"failed to connect to localhost:8081" in problem
        finally:
            await forward.close()

    run(engine, scenario)


def test_port_forward_tunnelled_in_websocket(engine: Engine, sleeper: str) -> None:
    netns = netns_of(engine, sleeper)

    async def scenario(server: StreamingServer) -> None:
        forward = await PortForward.tunnelled(server.portforward_url(sleeper, netns, []))
        try:
            data, problem = await forward.request(8080, HTTP_GET)
            assert problem == b"" and data.endswith(PAGE)
        finally:
            await forward.close()

    run(engine, scenario)


def test_plain_http_is_refused(engine: Engine, sleeper: str) -> None:
    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["true"], False, False, True, True)
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, url)
        assert refused.value.code == 400

    run(engine, scenario)


def test_port_forward_over_websocket_channels(engine: Engine, sleeper: str) -> None:
    """v4.channel.k8s.io: a data and an error channel per requested port,
    each opened with the port number (little-endian)."""
    netns = netns_of(engine, sleeper)

    async def scenario(server: StreamingServer) -> None:
        url = server.portforward_url(sleeper, netns, [8080, 8081])
        frames: dict[int, bytearray] = {i: bytearray() for i in range(4)}
        async with aiohttp.ClientSession() as http, http.ws_connect(
                url.replace("http", "ws", 1), protocols=["v4.channel.k8s.io"]) as socket:
            await socket.send_bytes(b"\x00" + HTTP_GET)
            async for message in socket:
                frames[message.data[0]] += message.data[1:]
                if frames[0].endswith(PAGE) and len(frames[3]) > 2:
                    break
        assert [bytes(frames[i][:2]) for i in range(4)] == [b"\x90\x1f"] * 2 + [b"\x91\x1f"] * 2
        assert frames[0][2:].startswith(b"HTTP/1.") and frames[1] == b"\x90\x1f"
        assert b"failed to connect to localhost:8081" in frames[3]

    run(engine, scenario)


def test_tls(engine: Engine, sleeper: str, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)

    async def scenario(server: StreamingServer) -> None:
        url = server.exec_url(sleeper, ["echo", "over tls"], False, False, True, True)
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(certs.ca))
        command = await RemoteCommand.open(url, stdin=False, context=context)
        result = await command.finish()
        assert result.stdout == b"over tls\n" and result.exit_code == 0

    run(engine, scenario, tls_cert=str(certs.cert), tls_key=str(certs.key))


def test_exec_failures_come_as_a_failure_status(engine: Engine, busybox: str) -> None:
    stopped = engine.docker("create", busybox, "true").stdout.decode().strip()
    try:
        async def scenario(server: StreamingServer) -> None:
            for target in ("no-such-container", stopped):
                url = server.exec_url(target, ["true"], False, False, True, True)
                status = (await spdy_command(url)).status
                assert status["status"] == "Failure" and status["reason"] == "InternalError"
                assert status["message"].startswith("failed to exec in container: ")

        run(engine, scenario)
    finally:
        engine.docker("rm", "-f", stopped, check=False)


def test_a_client_that_goes_away_ends_its_attach(engine: Engine, busybox: str) -> None:
    """The container prints nothing: only the client's leaving can end the session."""
    cid = engine.docker("run", "-d", "-i", busybox, "sleep", "3600").stdout.decode().strip()
    try:
        async def scenario(server: StreamingServer) -> None:
            command = await RemoteCommand.open(server.attach_url(cid, False, True, True, True),
                                               stdin=True)
            assert server.sessions == 1
            await command.client.close()
            async with aiohttp.ClientSession() as http:
                socket = await http.ws_connect(
                    server.attach_url(cid, False, True, True, True).replace("http", "ws", 1),
                    protocols=["v5.channel.k8s.io"])
                assert (await socket.receive_bytes()) == b"\x01"   # the session is open
                await socket.close()
            while server.sessions:
                await asyncio.sleep(0.05)

        run(engine, scenario)
    finally:
        engine.docker("rm", "-f", cid, check=False)
