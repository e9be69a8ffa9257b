"""The services the container service calls: image (rootfs leases) and
network (sandboxes). gRPC errors come back as the domain's BerthErrors with
the peer's message, so domain code never sees gRPC types."""

from __future__ import annotations

import grpc

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from berth.volume.v1 import volume_pb2_grpc
from services.common import errors
from services.common.clients import channel
from services.common.config import Config

# How long a cleanup call waits for a peer that is (re)starting.
_PEER_WAIT_SECONDS = 15

_BY_CODE = {cls.code: cls for cls in (
    errors.NotFound, errors.Conflict, errors.AlreadyExists, errors.InvalidArgument,
    errors.Unauthenticated, errors.PermissionDenied, errors.Unimplemented)}


def _translate(service: str, error: grpc.aio.AioRpcError) -> errors.BerthError:
    cls = _BY_CODE.get(error.code(), errors.Internal)
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return errors.Internal(f"{service} service unavailable")
    return cls(error.details() or error.code().name.lower())


class Peers:
    def __init__(self, config: Config) -> None:
        self._image = image_pb2_grpc.ImageServiceStub(channel(config, "image"))
        self._network = network_pb2_grpc.NetworkServiceStub(channel(config, "network"))
        # mounts.py takes the volume stub itself.
        self.volumes = volume_pb2_grpc.VolumeServiceStub(channel(config, "volume"))

    async def acquire_rootfs(self, image: str, holder: str) -> image_pb2.Rootfs:
        try:
            return await self._image.AcquireRootfs(
                image_pb2.AcquireRootfsRequest(image=image, holder=holder))
        except grpc.aio.AioRpcError as error:
            raise _translate("image", error) from error

    async def release_rootfs(self, holder: str) -> None:
        try:
            await self._image.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=holder))
        except grpc.aio.AioRpcError as error:
            raise _translate("image", error) from error

    async def create_sandbox(self, request: network_pb2.CreateSandboxRequest
                             ) -> network_pb2.Sandbox:
        try:
            return await self._network.CreateSandbox(request)
        except grpc.aio.AioRpcError as error:
            raise _translate("network", error) from error

    async def get_sandbox(self, container_id: str) -> network_pb2.Sandbox | None:
        try:
            return await self._network.GetSandbox(
                network_pb2.GetSandboxRequest(container_id=container_id))
        except grpc.aio.AioRpcError:
            return None

    async def destroy_sandbox(self, container_id: str) -> None:
        try:
            await self._network.DestroySandbox(
                network_pb2.DestroySandboxRequest(container_id=container_id),
                wait_for_ready=True, timeout=_PEER_WAIT_SECONDS)
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                raise _translate("network", error) from error

    async def forget_container(self, container_id: str) -> None:
        try:
            await self._network.ForgetContainer(
                network_pb2.ForgetContainerRequest(container_id=container_id))
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                raise _translate("network", error) from error
