"""The interceptor every gRPC server runs: it checks a unary request's
required fields, turns a BerthError into its gRPC status, and counts and
times each RPC in the metrics of metrics.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from services.common.errors import BerthError
from services.common.metrics import (
    GRPC_HANDLED,
    GRPC_MSG_RECEIVED,
    GRPC_MSG_SENT,
    GRPC_SECONDS,
    GRPC_STARTED,
)
from services.common.validation import check_required


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


async def _abort_with(context: grpc.aio.ServicerContext, exc: BerthError) -> None:
    await context.abort(exc.code, exc.message)


def _code_of(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC, and turns BerthError into gRPC statuses."""

    async def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        labels = (_rpc_type(handler), service, method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, labels),
                handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, labels),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, labels, counted_input=True),
                handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, labels, counted_input=True),
            handler.request_deserializer, handler.response_serializer)

    @staticmethod
    def _wrap_unary(behaviour: Callable, labels: tuple[str, str, str],
                    counted_input: bool = False) -> Callable:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _observed(labels, context):
                request = _prepared(request, labels, counted_input)
                response = await behaviour(request, context)
                GRPC_MSG_SENT.labels(*labels).inc()
                return response
        return wrapper

    @staticmethod
    def _wrap_stream(behaviour: Callable, labels: tuple[str, str, str],
                     counted_input: bool = False) -> Callable:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
            async with _observed(labels, context):
                request = _prepared(request, labels, counted_input)
                async for response in behaviour(request, context):
                    GRPC_MSG_SENT.labels(*labels).inc()
                    yield response
        return wrapper


@contextlib.asynccontextmanager
async def _observed(labels: tuple[str, str, str],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Count and time one RPC; a BerthError becomes its gRPC status."""
    GRPC_STARTED.labels(*labels).inc()
    start = time.perf_counter()
    try:
        yield
    except BerthError as exc:
        await _abort_with(context, exc)
    finally:
        GRPC_HANDLED.labels(*labels, _code_of(context)).inc()
        GRPC_SECONDS.labels(*labels).observe(time.perf_counter() - start)


def _prepared(request: Any, labels: tuple[str, str, str], streamed: bool) -> Any:
    """A streamed request is counted message by message; a unary one is
    checked for its required fields before the service sees it."""
    if streamed:
        return _count_messages(request, labels)
    check_required(request)
    return request


async def _count_messages(requests: AsyncIterator, labels: tuple[str, str, str]) -> AsyncIterator:
    async for message in requests:
        GRPC_MSG_RECEIVED.labels(*labels).inc()
        yield message
