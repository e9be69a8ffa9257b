"""services/common/peers.py: a peer's gRPC error reaches the caller as the
domain error of the same code with the peer's message, in unary, server
streaming and bidirectional calls; a peer that cannot be reached is
PeerUnavailable naming it; a peer's unexpected exception is an Internal error
whose text only reaches the log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from berth.container.v1 import container_pb2, container_pb2_grpc
from services.common.config import Config
from services.common.errors import (
    Conflict,
    Internal,
    InvalidArgument,
    NotFound,
    PeerUnavailable,
)
from services.common.interceptors import ServerInterceptor
from services.common.peers import PeerClient

Client = PeerClient[container_pb2_grpc.ContainerServiceStub]


class RefusingContainers(container_pb2_grpc.ContainerServiceServicer):
    """Answers each call with the error a real container service could give."""

    async def Inspect(self, request, context):  # noqa: N802
        raise NotFound(f"No such container: {request.id}")

    async def Logs(self, request, context):  # noqa: N802
        yield container_pb2.LogEntry(data=b"first line\n")
        raise Conflict(f"container {request.id} is gone")

    async def Remove(self, request, context):  # noqa: N802
        raise KeyError(f"/var/lib/berth/container/{request.id}/config.json")

    async def Attach(self, request_iterator, context):  # noqa: N802
        async for _ in request_iterator:
            raise InvalidArgument("attach options come first")
        yield container_pb2.IOFrame()


def run_against_peer(tmp_path: Path, scenario: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        server = grpc.aio.server(interceptors=[ServerInterceptor()])
        container_pb2_grpc.add_ContainerServiceServicer_to_server(RefusingContainers(), server)
        address = f"unix://{tmp_path / 'container.sock'}"
        server.add_insecure_port(address)
        await server.start()
        client = PeerClient.connect(Config(peers={"container": address}), "container",
                                    container_pb2_grpc.ContainerServiceStub)
        try:
            await scenario(client)
        finally:
            await client.close()
            await server.stop(None)
    asyncio.run(main())


def test_unary_error_is_the_domain_error(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        with pytest.raises(NotFound, match="No such container: web"):
            await client.Inspect(container_pb2.InspectContainerRequest(id="web"))
    run_against_peer(tmp_path, scenario)


def test_server_stream_error_after_messages(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        received = []
        with pytest.raises(Conflict, match="container web is gone"):
            async for entry in client.Logs(container_pb2.LogsRequest(id="web")):
                received.append(entry.data)
        assert received == [b"first line\n"]
    run_against_peer(tmp_path, scenario)


def test_bidirectional_stream_error(tmp_path: Path) -> None:
    async def scenario(client: Client) -> None:
        attach = client.Attach()
        await attach.write(container_pb2.AttachRequest(stdin=b"x"))
        with pytest.raises(InvalidArgument, match="attach options come first"):
            await attach.read()
    run_against_peer(tmp_path, scenario)


def test_unexpected_peer_error_is_logged_not_passed_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(client: Client) -> None:
        with pytest.raises(Internal) as error:
            await client.Remove(container_pb2.RemoveContainerRequest(id="web"))
        assert error.value.message == "internal error in the berth container service"
    run_against_peer(tmp_path, scenario)
    assert "/var/lib/berth/container/web/config.json" in caplog.text


def test_unreachable_peer_is_named(tmp_path: Path) -> None:
    async def main() -> None:
        config = Config(peers={"container": f"unix://{tmp_path / 'nobody.sock'}"})
        client = PeerClient.connect(config, "container", container_pb2_grpc.ContainerServiceStub)
        try:
            with pytest.raises(PeerUnavailable) as error:
                await client.Inspect(container_pb2.InspectContainerRequest(id="web"))
            stream: AsyncIterator = aiter(client.Logs(container_pb2.LogsRequest(id="web")))
            with pytest.raises(PeerUnavailable):
                await anext(stream)
        finally:
            await client.close()
        assert error.value.message == "container service unavailable"
        assert isinstance(error.value, Internal)   # to our own callers: a 500, not a 503
    asyncio.run(main())


class CountingAttaches(RefusingContainers):
    """Counts the Attach calls that reach it; answers each stdin chunk with a frame."""

    def __init__(self) -> None:
        self.attaches = 0

    async def Attach(self, request_iterator, context):  # noqa: N802
        self.attaches += 1
        async for request in request_iterator:
            yield container_pb2.IOFrame(data=request.stdin)


class LatePeer:
    """A client whose channel's first attempt failed (no peer yet), and the
    peer, a CountingAttaches, started when the test says."""

    def __init__(self, tmp_path: Path) -> None:
        self.address = f"unix://{tmp_path / 'container.sock'}"
        self.client = PeerClient.connect(Config(peers={"container": self.address}),
                                         "container", container_pb2_grpc.ContainerServiceStub)
        self.servicer = CountingAttaches()
        self.server = grpc.aio.server(interceptors=[ServerInterceptor()])

    async def in_back_off(self) -> None:
        peer_channel = self.client._channel
        state = peer_channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            await peer_channel.wait_for_state_change(state)
            state = peer_channel.get_state()

    async def start(self) -> None:
        container_pb2_grpc.add_ContainerServiceServicer_to_server(self.servicer, self.server)
        self.server.add_insecure_port(self.address)
        await self.server.start()

    async def close(self) -> None:
        await self.client.close()
        await self.server.stop(None)


def test_a_call_waits_for_a_peer_that_is_starting(tmp_path: Path) -> None:
    """The channel's first attempt failed (the peer's socket was not there
    yet) and is in back-off when the peer comes up: the call gets through."""
    async def main() -> None:
        peer = LatePeer(tmp_path)
        try:
            await peer.in_back_off()
            await peer.start()
            with pytest.raises(NotFound, match="No such container: web"):
                await peer.client.Inspect(container_pb2.InspectContainerRequest(id="web"))
            with pytest.raises(Conflict, match="container web is gone"):
                async for _ in peer.client.Logs(container_pb2.LogsRequest(id="web")):
                    pass
        finally:
            await peer.close()
    asyncio.run(main())


def test_a_stream_waits_for_a_peer_that_is_starting_and_opens_once(tmp_path: Path) -> None:
    """Streams started while the peer comes up get through (no unary call
    connected the channel first), and a reader and a writer racing to start
    a bidirectional stream share one call."""
    async def main() -> None:
        peer = LatePeer(tmp_path)
        client = peer.client
        try:
            await peer.in_back_off()
            await peer.start()
            attach = client.Attach()
            reader = asyncio.create_task(attach.read())
            await attach.write(container_pb2.AttachRequest(stdin=b"hello"))
            assert (await reader).data == b"hello"
            await attach.done_writing()
            assert peer.servicer.attaches == 1
            with pytest.raises(Conflict, match="container web is gone"):
                async for _ in client.Logs(container_pb2.LogsRequest(id="web")):
                    pass
        finally:
            await peer.close()
    asyncio.run(main())


def test_a_stream_cancelled_before_it_opened_never_opens(tmp_path: Path) -> None:
    """cancel() while the stream waits for the channel ends its reader and
    writer, and no call reaches the peer."""
    async def main() -> None:
        peer = LatePeer(tmp_path)
        client = peer.client
        try:
            await peer.in_back_off()
            attach = client.Attach()
            reader = asyncio.create_task(attach.read())
            writer = asyncio.create_task(attach.write(container_pb2.AttachRequest(stdin=b"x")))
            await asyncio.sleep(0)
            attach.cancel()
            for waiting in (reader, writer):
                with pytest.raises(asyncio.CancelledError):
                    await waiting
            await peer.start()
            with pytest.raises(NotFound):
                await client.Inspect(container_pb2.InspectContainerRequest(id="web"))
            assert peer.servicer.attaches == 0
        finally:
            await peer.close()
    asyncio.run(main())
