"""The services the container service calls: image (rootfs leases, commits)
and network (sandboxes). gRPC errors come back as the domain's BerthErrors with
the peer's message, so domain code never sees gRPC types."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from berth.volume.v1 import volume_pb2_grpc
from services.common import errors
from services.common.clients import channel
from services.common.config import Config

# How long a cleanup call waits for a peer that is (re)starting.
_PEER_WAIT_SECONDS = 15


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
            raise errors.from_rpc("image", error) from error

    async def release_rootfs(self, holder: str) -> None:
        try:
            await self._image.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=holder))
        except grpc.aio.AioRpcError as error:
            raise errors.from_rpc("image", error) from error

    async def commit_layer(self, messages: AsyncIterator[image_pb2.CommitLayerRequest]) -> str:
        """Send a layer (options, then tar chunks) to the image service; the new image's ID."""
        try:
            return (await self._image.CommitLayer(messages)).id
        except grpc.aio.AioRpcError as error:
            raise errors.from_rpc("image", error) from error

    async def create_sandbox(self, request: network_pb2.CreateSandboxRequest
                             ) -> network_pb2.Sandbox:
        try:
            return await self._network.CreateSandbox(request)
        except grpc.aio.AioRpcError as error:
            raise errors.from_rpc("network", error) from error

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
                raise errors.from_rpc("network", error) from error

    async def rename_container(self, container_id: str, new_name: str) -> None:
        """Let the network service answer DNS for the container's new name."""
        try:
            await self._network.RenameContainer(network_pb2.RenameContainerRequest(
                container_id=container_id, new_name=new_name))
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                raise errors.from_rpc("network", error) from error

    async def forget_container(self, container_id: str) -> None:
        try:
            await self._network.ForgetContainer(
                network_pb2.ForgetContainerRequest(container_id=container_id))
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                raise errors.from_rpc("network", error) from error
