"""The one way a berth process calls another: channels (unix socket, or
tcp:// with mutual TLS) and PeerClient, which turns a peer's gRPC error into
the domain error of the same code, naming the peer. Code above a PeerClient
sees BerthErrors only, never grpc types."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

from services.common.config import Config
from services.common.errors import from_rpc

StubT = TypeVar("StubT")

_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.enable_retries", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# How long a call waits for a channel that is not connected yet (a peer that
# is starting, or whose previous attempt failed and is in back-off) before it
# goes out and fails as unavailable: longer than the reconnect back-off, short
# enough that a peer that is really down is reported at once (the gateway's 503).
CONNECT_WAIT_SECONDS = 1.2


def _target(config: Config, service: str) -> tuple[str, grpc.ChannelCredentials | None]:
    """The dial target and, for tcp:// peers, the mutual-TLS credentials."""
    address = config.address(service)
    if not address.startswith("tcp://"):
        return address, None
    if config.tls is None:
        raise SystemExit(f"berth: {service} at {address} needs --tls-ca/--tls-cert/--tls-key")
    ca, cert, key = config.tls.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                         certificate_chain=cert)
    return address.removeprefix("tcp://"), creds


def channel(config: Config, service: str, own_connection: bool = False) -> grpc.aio.Channel:
    """An asyncio channel to `service` (unix socket, or tcp:// with mutual TLS).

    `own_connection`: do not share the connection with the process's other
    channels to `service` (gRPC shares them by target), so this channel's
    attempts while the service is away put no other channel in back-off.
    """
    target, creds = _target(config, service)
    options = [*_OPTIONS, ("grpc.use_local_subchannel_pool", 1)] if own_connection else _OPTIONS
    if creds is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, creds, options=options)


def sync_channel(config: Config, service: str) -> grpc.Channel:
    """A blocking channel, for the CLI."""
    target, creds = _target(config, service)
    if creds is None:
        return grpc.insecure_channel(target, options=_OPTIONS)
    return grpc.secure_channel(target, creds, options=_OPTIONS)


async def until_connected(peer_channel: grpc.aio.Channel) -> None:
    """Wait up to CONNECT_WAIT_SECONDS for the channel to be ready; the call
    that follows fails as usual if it is not."""
    if peer_channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(peer_channel.channel_ready(), CONNECT_WAIT_SECONDS)


class PeerStream:
    """A streaming call (server, client or bidirectional) to a peer, whose
    gRPC errors come out as domain errors.

    The call opens at the first read or write, once the channel is connected
    (until_connected), so a stream started while the peer is (re)starting
    does not fail at once. One opening serves every reader and writer: the
    stream is one call, whoever comes first. cancel() before it opened means
    it never opens."""

    def __init__(self, service: str, open_call: Callable[[], Any],
                 connected: Callable[[], Awaitable[None]]) -> None:
        self._service = service
        self._open_call = open_call
        self._connected = connected
        self._call: Any = None
        self._opening: asyncio.Task | None = None
        self._cancelled = False

    async def _open(self) -> Any:
        await self._connected()
        if self._cancelled:
            raise asyncio.CancelledError
        self._call = self._open_call()
        return self._call

    async def _started(self) -> Any:
        if self._call is not None:
            return self._call
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        # Shielded: a reader cancelled while it waits leaves the opening to
        # the writer; cancel() stops it for both.
        return await asyncio.shield(self._opening)

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for message in await self._started():
                yield message
        except grpc.aio.AioRpcError as error:
            raise from_rpc(self._service, error) from error

    async def read(self) -> Any:
        """The next message, or grpc.aio.EOF after the last."""
        try:
            return await (await self._started()).read()
        except grpc.aio.AioRpcError as error:
            raise from_rpc(self._service, error) from error

    async def write(self, message: Any) -> None:
        try:
            await (await self._started()).write(message)
        except grpc.aio.AioRpcError as error:
            raise from_rpc(self._service, error) from error

    async def done_writing(self) -> None:
        await (await self._started()).done_writing()

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()
        elif self._opening is not None:
            self._opening.cancel()


class PeerClient(Generic[StubT]):
    """One peer service's stub over its own channel. `client.Method(...)` is
    awaited for a unary answer, or gives a PeerStream for a streamed one.
    Every call first gives a channel still connecting a moment
    (until_connected), so a call made while a peer is (re)starting does not
    fail at once."""

    def __init__(self, service: str, stub_type: Callable[[grpc.aio.Channel], StubT],
                 over: grpc.aio.Channel) -> None:
        self.service = service
        self._channel = over
        self._stub = stub_type(over)

    @classmethod
    def connect(cls, config: Config, service: str,
                stub_type: Callable[[grpc.aio.Channel], StubT]) -> PeerClient[StubT]:
        """A client over a new channel to `service`; close() closes it."""
        return cls(service, stub_type, channel(config, service))

    def sibling(self, stub_type: Callable[[grpc.aio.Channel], Any]) -> PeerClient:
        """Another API of the same service (e.g. its Info) over this channel."""
        return PeerClient(self.service, stub_type, self._channel)

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._stub, method)
        if isinstance(call, grpc.aio.UnaryUnaryMultiCallable | grpc.aio.StreamUnaryMultiCallable):
            async def invoke(*args: Any, **kwargs: Any) -> Any:
                await until_connected(self._channel)
                try:
                    return await call(*args, **kwargs)
                except grpc.aio.AioRpcError as error:
                    raise from_rpc(self.service, error) from error
            return invoke

        def open_stream(*args: Any, **kwargs: Any) -> PeerStream:
            return PeerStream(self.service, lambda: call(*args, **kwargs),
                              lambda: until_connected(self._channel))
        return open_stream

    async def close(self) -> None:
        await self._channel.close()
