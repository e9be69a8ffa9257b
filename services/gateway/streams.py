"""Streams between HTTP and gRPC: request bodies turned into few big gRPC
messages, and gRPC server streams turned into chunked JSON responses.

Writes await the transport, so a slow client slows the gRPC stream
(backpressure); a client that goes away cancels the gRPC call, even while
the stream is silent (events, logs -f, a build's long RUN step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from aiohttp import web

from services.common.errors import BerthError
from services.common.peers import PeerStream
from services.common.relay import coalesced, read_ahead
from services.gateway.convert.progress import progress_to_json

# How often a silent stream looks whether its client is still there.
CLIENT_CHECK_SECONDS = 0.5


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _cancel_when_client_leaves(request: web.Request, targets: tuple[Cancellable, ...]
                                     ) -> None:
    # aiohttp tells a handler of a closed connection only when it writes.
    while not client_gone(request):
        await asyncio.sleep(CLIENT_CHECK_SECONDS)
    for target in targets:
        target.cancel()


@contextlib.contextmanager
def cancelled_when_client_leaves(request: web.Request, *targets: Cancellable) -> Iterator[None]:
    """Within the block, cancel `targets` (gRPC streams, tasks) as soon as
    the client goes away."""
    watcher = asyncio.create_task(_cancel_when_client_leaves(request, targets))
    try:
        yield
    finally:
        watcher.cancel()


def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in pieces of about 1 MiB, read ahead while the
    previous pieces are sent on."""
    return read_ahead(coalesced(request.content.iter_any()))


async def json_stream(request: web.Request, messages: AsyncIterable[Any],
                      encode: Callable[[Any], dict[str, Any]], status: int = 200,
                      separator: bytes = b"\r\n") -> web.StreamResponse:
    """Send each message as one JSON line; errors after the headers become
    a final {"error": ...} line, as Docker does."""
    iterator = aiter(messages)
    response = web.StreamResponse(status=status)
    response.content_type = "application/json"
    # Ask the service first, so errors before any output keep their status.
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        first = None
    await response.prepare(request)
    try:
        if first is not None:
            await response.write(json.dumps(encode(first)).encode() + separator)
        with cancelled_when_client_leaves(request, *_streams(messages)):
            async for message in iterator:
                await response.write(json.dumps(encode(message)).encode() + separator)
    except BerthError as exc:
        error = {"errorDetail": {"message": str(exc)}, "error": str(exc)}
        await response.write(json.dumps(error).encode() + separator)
    finally:
        for stream in _streams(messages):
            stream.cancel()
    await response.write_eof()
    return response


def _streams(messages: AsyncIterable[Any]) -> tuple[PeerStream, ...]:
    return (messages,) if isinstance(messages, PeerStream) else ()


async def pump_body(request: web.Request, stream: PeerStream, wrap: Any) -> None:
    """Send the request body to a client-streaming call, then half-close it."""
    async for chunk in body_chunks(request):
        await stream.write(wrap(chunk))
    await stream.done_writing()


async def stream_upload(request: web.Request, stream: PeerStream, options: Any,
                        wrap: Any) -> web.StreamResponse:
    """Upload the body to `stream` while relaying its progress as JSON lines."""
    await stream.write(options)
    pump = asyncio.create_task(pump_body(request, stream, wrap))
    try:
        return await json_stream(request, stream, progress_to_json)
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await pump
