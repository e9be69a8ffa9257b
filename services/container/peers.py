"""The services the container service calls: image (rootfs leases, commits),
network (sandboxes) and volume (mounts). Errors come back as the domain's
BerthErrors with the peer's message (services.common.peers), so domain code
never sees gRPC types."""

from __future__ import annotations

from collections.abc import AsyncIterator

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.network.v1 import network_pb2, network_pb2_grpc
from berth.volume.v1 import volume_pb2_grpc
from services.common import owners
from services.common.config import Config
from services.common.errors import BerthError, NotFound, Unimplemented
from services.common.peers import PeerClient

# How long a cleanup call waits for a peer that is (re)starting.
_PEER_WAIT_SECONDS = 15

# How the peers name this service as the owner of rootfs leases and sandboxes
# (their reconcile after a crash sweeps only what the container service owns).
OWNER = owners.CONTAINER


class Peers:
    def __init__(self, config: Config) -> None:
        self._image = PeerClient.connect(config, "image", image_pb2_grpc.ImageServiceStub)
        self._network = PeerClient.connect(config, "network", network_pb2_grpc.NetworkServiceStub)
        # mounts.py makes its own volume requests.
        self.volumes = PeerClient.connect(config, "volume", volume_pb2_grpc.VolumeServiceStub)

    async def acquire_rootfs(self, image: str, holder: str) -> image_pb2.Rootfs:
        return await self._image.AcquireRootfs(
            image_pb2.AcquireRootfsRequest(image=image, holder=holder, owner=OWNER))

    async def release_rootfs(self, holder: str) -> None:
        await self._image.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=holder))

    async def commit_layer(self, messages: AsyncIterator[image_pb2.CommitLayerRequest]) -> str:
        """Send a layer (options, then tar chunks) to the image service; the new image's ID."""
        return (await self._image.CommitLayer(messages)).id

    async def create_sandbox(self, request: network_pb2.CreateSandboxRequest
                             ) -> network_pb2.Sandbox:
        return await self._network.CreateSandbox(request)

    async def get_sandbox(self, container_id: str) -> network_pb2.Sandbox | None:
        try:
            return await self._network.GetSandbox(
                network_pb2.GetSandboxRequest(container_id=container_id))
        except BerthError:
            return None

    async def connect(self, container_id: str, name: str,
                      endpoint: network_pb2.EndpointRequest) -> network_pb2.ConnectResponse:
        return await self._network.Connect(network_pb2.ConnectRequest(
            container_id=container_id, container_name=name, endpoint=endpoint))

    async def disconnect(self, container_id: str, network: str,
                         force: bool) -> network_pb2.DisconnectResponse:
        return await self._network.Disconnect(network_pb2.DisconnectRequest(
            container_id=container_id, network=network, force=force))

    async def plan_sandbox(self, request: network_pb2.CreateSandboxRequest
                           ) -> network_pb2.Sandbox | None:
        """The endpoints a container that is not running gets at its next start."""
        try:
            return await self._network.PlanSandbox(request)
        except BerthError:
            return None

    async def destroy_sandbox(self, container_id: str) -> None:
        try:
            await self._network.DestroySandbox(
                network_pb2.DestroySandboxRequest(container_id=container_id),
                wait_for_ready=True, timeout=_PEER_WAIT_SECONDS)
        except (NotFound, Unimplemented):
            pass

    async def rename_container(self, container_id: str, new_name: str) -> None:
        """Let the network service answer DNS for the container's new name."""
        try:
            await self._network.RenameContainer(network_pb2.RenameContainerRequest(
                container_id=container_id, new_name=new_name))
        except (NotFound, Unimplemented):
            pass

    async def forget_container(self, container_id: str) -> None:
        try:
            await self._network.ForgetContainer(
                network_pb2.ForgetContainerRequest(container_id=container_id))
        except (NotFound, Unimplemented):
            pass
