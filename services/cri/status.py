"""What the runtime says about itself: Version and the Status conditions."""

from __future__ import annotations

from berth.network.v1 import network_pb2
from k8s.runtime.v1 import api_pb2
from services.common.errors import BerthError
from services.common.version import VERSION
from services.cri.peers import Peers

RUNTIME_NAME = "berth"
CRI_VERSION = "v1"
NOT_READY_REASON = "NetworkPluginNotReady"


class RuntimeInfo:
    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @staticmethod
    def version() -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(version="0.1.0", runtime_name=RUNTIME_NAME,
                                       runtime_version=VERSION,
                                       runtime_api_version=CRI_VERSION)

    @staticmethod
    def features() -> api_pb2.RuntimeFeatures:
        return api_pb2.RuntimeFeatures(supplemental_groups_policy=True)

    @staticmethod
    def handlers() -> list[api_pb2.RuntimeHandler]:
        """The default handler ("") and its name, runc: recursive read-only
        mounts through runc's "rro" (the kernel's mount_setattr)."""
        features = api_pb2.RuntimeHandlerFeatures(recursive_read_only_mounts=True)
        return [api_pb2.RuntimeHandler(name=name, features=features) for name in ("", "runc")]

    async def status(self) -> api_pb2.RuntimeStatus:
        runtime = api_pb2.RuntimeCondition(type="RuntimeReady", status=True)
        return api_pb2.RuntimeStatus(conditions=[runtime, await self._network_condition()])

    async def _network_condition(self) -> api_pb2.RuntimeCondition:
        """NetworkReady as the network service finds the CNI configuration."""
        try:
            cni = await self._peers.network.CniStatus(network_pb2.CniStatusRequest())
        except BerthError as error:
            return api_pb2.RuntimeCondition(
                type="NetworkReady", status=False, reason=NOT_READY_REASON,
                message=f"network service: {error.message}")
        return api_pb2.RuntimeCondition(type="NetworkReady", status=cni.ready,
                                        reason="" if cni.ready else cni.reason,
                                        message=cni.message)
