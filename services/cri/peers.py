"""The berth services the cri service calls: container, image and network,
each a PeerClient (services/common/peers.py), whose gRPC errors come out as
the domain errors of the same code, so the domain modules never see gRPC
types."""

from __future__ import annotations

from berth.container.v1 import container_pb2
from berth.container.v1.container_pb2_grpc import ContainerServiceStub
from berth.image.v1 import image_pb2
from berth.image.v1.image_pb2_grpc import ImageServiceStub
from berth.network.v1 import network_pb2
from berth.network.v1.network_pb2_grpc import NetworkServiceStub
from berth.types.v1 import types_pb2
from services.common import owners
from services.common.config import Config
from services.common.errors import NotFound
from services.common.peers import PeerClient
from services.cri import labels

# How long a cleanup call waits for a peer that is (re)starting.
PEER_WAIT_SECONDS = 15
# The owner of the network sandboxes and rootfs leases this service takes:
# the network and image services sweep them against this service's list only.
OWNER = owners.CRI


class Peers:
    def __init__(self, config: Config) -> None:
        self.containers = PeerClient.connect(config, "container", ContainerServiceStub)
        self.images = PeerClient.connect(config, "image", ImageServiceStub)
        self.network = PeerClient.connect(config, "network", NetworkServiceStub)

    async def close(self) -> None:
        for client in (self.containers, self.images, self.network):
            await client.close()

    async def inspect_container(self, cid: str) -> container_pb2.ContainerInspect | None:
        """The container, or None when the container service does not know it."""
        try:
            return await self.containers.Inspect(container_pb2.InspectContainerRequest(id=cid))
        except NotFound:
            return None

    async def inspect_image(self, name: str) -> image_pb2.Image | None:
        """The image, or None when the image service does not have it."""
        try:
            return await self.images.Inspect(image_pb2.InspectImageRequest(name=name))
        except NotFound:
            return None

    async def container_states(self, kind: str) -> dict[str, str]:
        """ID -> status of the berth containers of one CRI kind, in one call
        (kubelet lists every second)."""
        request = container_pb2.ListContainersRequest(all=True, filters=types_pb2.Filters(
            filters={"label": types_pb2.StringList(values=[f"{labels.TYPE}={kind}"])}))
        response = await self.containers.List(request)
        return {c.id: c.state for c in response.containers}

    async def destroy_sandbox(self, sandbox_id: str) -> None:
        """Tear down a pod's network; an unknown one is already gone."""
        try:
            await self.network.DestroySandbox(
                network_pb2.DestroySandboxRequest(container_id=sandbox_id),
                wait_for_ready=True, timeout=PEER_WAIT_SECONDS)
        except NotFound:
            return
