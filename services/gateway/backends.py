"""Typed gRPC clients the gateway's handlers call, one per service.

Each client wraps its stub so that a service that is down surfaces as
ServiceUnavailable (HTTP 503 naming the service) and any other gRPC error as
RpcFailed, which the error middleware maps to Docker's status codes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from berth.build.v1 import build_pb2_grpc
from berth.container.v1 import container_pb2_grpc
from berth.image.v1 import image_pb2_grpc
from berth.network.v1 import network_pb2_grpc
from berth.types.v1 import types_pb2_grpc
from berth.volume.v1 import volume_pb2_grpc
from services.common.clients import channel
from services.common.config import Config

log = logging.getLogger("berth.gateway")


class ServiceUnavailable(Exception):
    def __init__(self, service: str) -> None:
        super().__init__(f"{service} service unavailable")
        self.service = service


class RpcFailed(Exception):
    """A gRPC error from a service, with its code and human message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def translate(service: str, error: grpc.aio.AioRpcError) -> Exception:
    # Services never raise UNAVAILABLE themselves (errors.py has no such
    # class), so it always means the transport could not reach them.
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return ServiceUnavailable(service)
    if error.code() == grpc.StatusCode.UNKNOWN:
        # An exception the service did not expect: its text (a Python
        # exception, often with host paths) goes to the log, not to the client.
        log.error("unexpected error in the %s service: %s", service, error.details())
        return RpcFailed(error.code(), f"internal error in the berth {service} service")
    return RpcFailed(error.code(), error.details() or error.code().name.lower())


class Stream:
    """A server- or bidi-streaming call whose errors are translated."""

    def __init__(self, service: str, call: Any) -> None:
        self._service = service
        self.call = call

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for message in self.call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise translate(self._service, error) from error

    async def write(self, message: Any) -> None:
        try:
            await self.call.write(message)
        except grpc.aio.AioRpcError as error:
            raise translate(self._service, error) from error

    async def done_writing(self) -> None:
        await self.call.done_writing()

    def cancel(self) -> None:
        self.call.cancel()


class ServiceClient:
    """Attribute access gives the stub's methods with translated errors."""

    def __init__(self, service: str, stub: Any) -> None:
        self._service = service
        self._stub = stub

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._stub, method)
        if isinstance(call, grpc.aio.UnaryUnaryMultiCallable | grpc.aio.StreamUnaryMultiCallable):
            async def invoke(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await call(*args, **kwargs)
                except grpc.aio.AioRpcError as error:
                    raise translate(self._service, error) from error
            return invoke

        def open_stream(*args: Any, **kwargs: Any) -> Stream:
            return Stream(self._service, call(*args, **kwargs))
        return open_stream


class Backends:
    """Every service the gateway talks to, plus their Info endpoints."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._channels = {name: channel(config, name)
                          for name in ("image", "container", "network", "volume", "build")}
        self.image = ServiceClient(
            "image", image_pb2_grpc.ImageServiceStub(self._channels["image"]))
        self.container = ServiceClient(
            "container", container_pb2_grpc.ContainerServiceStub(self._channels["container"]))
        self.network = ServiceClient(
            "network", network_pb2_grpc.NetworkServiceStub(self._channels["network"]))
        self.volume = ServiceClient(
            "volume", volume_pb2_grpc.VolumeServiceStub(self._channels["volume"]))
        self.build = ServiceClient(
            "build", build_pb2_grpc.BuildServiceStub(self._channels["build"]))
        self.info = {name: ServiceClient(name, types_pb2_grpc.InfoStub(ch))
                     for name, ch in self._channels.items()}

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
