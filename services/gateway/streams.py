"""Streams between HTTP and gRPC: request bodies turned into few big gRPC
messages, and gRPC server streams turned into chunked JSON responses.

Writes await the transport, so a slow client slows the gRPC stream
(backpressure); a client that goes away cancels the gRPC call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

from aiohttp import web

from berth.types.v1 import types_pb2
from services.common.errors import BerthError
from services.common.peers import PeerStream
from services.common.relay import coalesced, read_ahead


def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body in pieces of about 1 MiB, read ahead while the
    previous pieces are sent on."""
    return read_ahead(coalesced(request.content.iter_any()))


def progress_to_json(message: types_pb2.Progress) -> dict[str, Any]:
    """Docker's JSONMessage from a Progress message."""
    out: dict[str, Any] = {}
    if message.error:
        return {"errorDetail": {"message": message.error}, "error": message.error}
    if message.stream:
        out["stream"] = message.stream
    if message.status:
        out["status"] = message.status
    if message.id:
        out["id"] = message.id
    if message.total or message.current:
        out["progressDetail"] = {"current": message.current, "total": message.total}
    elif message.status:
        out["progressDetail"] = {}
    if message.progress:
        out["progress"] = message.progress
    if message.HasField("aux"):
        aux = message.aux
        out["aux"] = ({"ID": aux.id} if aux.id and not aux.digest
                      else {"Tag": aux.tag, "Digest": aux.digest, "Size": aux.size})
    return out


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
        async for message in iterator:
            await response.write(json.dumps(encode(message)).encode() + separator)
    except BerthError as exc:
        error = {"errorDetail": {"message": str(exc)}, "error": str(exc)}
        await response.write(json.dumps(error).encode() + separator)
    finally:
        if isinstance(messages, PeerStream):
            messages.cancel()
    await response.write_eof()
    return response
