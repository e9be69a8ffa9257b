"""ImageFiles: the paths a build asks the view container about."""

from __future__ import annotations

import asyncio
from pathlib import Path

from berth.container.v1 import container_pb2
from services.builder.image_files import ImageFiles
from services.builder.store import CacheStore
from services.common import gomode


class StatPeers:
    """The container service as ImageFiles uses it for stats: one view
    container, and the paths StatPath was asked for."""

    def __init__(self, tree: dict[str, container_pb2.PathStat]) -> None:
        self.tree = tree
        self.asked: list[str] = []

    async def create_container(self, request: container_pb2.CreateContainerRequest
                               ) -> tuple[str, list[str]]:
        return "view", []

    async def keep_mounted(self, container_id: str) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def stat_path(self, container_id: str, path: str) -> container_pb2.PathStat | None:
        self.asked.append(path)
        return self.tree.get(path)


def test_resolve_asks_for_clean_absolute_paths(tmp_path: Path) -> None:
    directory = container_pb2.PathStat(name="app", mode=gomode.DIR | 0o755)
    link = container_pb2.PathStat(name="here", mode=gomode.SYMLINK | 0o777,
                                  link_target="/app")
    peers = StatPeers({"/app": directory, "/here": link})

    async def resolve(*paths: str) -> list[tuple[str, container_pb2.PathStat] | None]:
        files = ImageFiles("sha256:image", peers, CacheStore(tmp_path / "state.db"), tmp_path)
        return [await files.resolve(path) for path in paths]

    found = asyncio.run(resolve("/app", "app", "//app/", "/here"))
    assert found == [("/app", directory)] * 4
    assert peers.asked == ["/app", "/here"]
