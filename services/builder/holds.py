"""The image service kept swept of the holds no running build has: a
release it missed (it was away, restarting) is dropped as soon as it answers
again, and whenever it comes back (services/common/sweeps.py, as the
container service does for its containers); at the build service's start
that drops the holds of builds a crash cut short. docs/design.md
"Reconcile after a crash"."""

from __future__ import annotations

from collections.abc import Callable

from berth.image.v1 import image_pb2, image_pb2_grpc
from services.common import owners
from services.common.config import Config
from services.common.peers import PeerClient, channel
from services.common.sweeps import PeerSweeps

_SWEEP_TIMEOUT_SECONDS = 60


class HoldSweeper:
    """Sweeps the image service's `build` leases against `live_holders`,
    the holders of the builds running (a hold is named before it is taken)."""

    def __init__(self, config: Config, live_holders: Callable[[], set[str]]) -> None:
        self._live_holders = live_holders
        self._channel = channel(config, "image", own_connection=True)
        self._images = PeerClient("image", image_pb2_grpc.ImageServiceStub, self._channel)
        self._sweeps = PeerSweeps("build", {"image": self._channel},
                                  {"image": self._sweep_image})

    def start(self) -> None:
        self._sweeps.start()

    def missed(self) -> None:
        """A release failed: sweep again as soon as the image service answers."""
        self._sweeps.sweep_soon("image")

    async def close(self) -> None:
        await self._sweeps.close()
        await self._channel.close()

    async def _sweep_image(self, before_ns: int) -> list[str]:
        reply = await self._images.ReleaseGoneRootfs(image_pb2.ReleaseGoneRootfsRequest(
            owner=owners.BUILD, holders=sorted(self._live_holders()), before_nano=before_ns),
            timeout=_SWEEP_TIMEOUT_SECONDS)
        return list(reply.holders)
