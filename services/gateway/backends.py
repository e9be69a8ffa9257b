"""The services the gateway's handlers call, one PeerClient each
(services.common.peers): a service that is down surfaces as PeerUnavailable
(HTTP 503 naming the service) and any other gRPC error as the BerthError of
its code, which the error middleware maps to Docker's status codes."""

from __future__ import annotations

from berth.build.v1 import build_pb2_grpc
from berth.container.v1 import container_pb2_grpc
from berth.image.v1 import image_pb2_grpc
from berth.network.v1 import network_pb2_grpc
from berth.types.v1 import types_pb2_grpc
from berth.volume.v1 import volume_pb2_grpc
from services.common.config import Config
from services.common.peers import PeerClient


class Backends:
    """Every service the gateway talks to, plus their Info endpoints."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.image = PeerClient.connect(config, "image", image_pb2_grpc.ImageServiceStub)
        self.container = PeerClient.connect(config, "container",
                                            container_pb2_grpc.ContainerServiceStub)
        self.network = PeerClient.connect(config, "network", network_pb2_grpc.NetworkServiceStub)
        self.volume = PeerClient.connect(config, "volume", volume_pb2_grpc.VolumeServiceStub)
        self.build = PeerClient.connect(config, "build", build_pb2_grpc.BuildServiceStub)
        services = (self.image, self.container, self.network, self.volume, self.build)
        self.info = {client.service: client.sibling(types_pb2_grpc.InfoStub)
                     for client in services}

    async def close(self) -> None:
        for client in (self.image, self.container, self.network, self.volume, self.build):
            await client.close()
