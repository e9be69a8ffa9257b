"""registry-mirrors: a Docker Hub name is pulled from the configured mirror.
Runs the image service's domain in process, with the engine config a
daemon.json would give."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from services.common.events import EventBus
from services.image.distribution import Distribution
from services.image.images import Images
from services.image.ingest import Ingest
from services.image.registry import Credentials, Registries
from services.image.removal import Removal
from tests.support.registry import Registry


async def pull_through_mirror(root: Path, mirror: str) -> list[str]:
    images = Images(root, EventBus("image"))
    registries = Registries({"registry-mirrors": [mirror]})
    try:
        distribution = Distribution(images, Ingest(images, Removal(images)), registries)
        statuses = [m.status async for m in distribution.pull("busybox", "mirrored", "",
                                                              Credentials())]
        assert images.inspect("busybox:mirrored").repo_tags == ["busybox:mirrored"]
        return statuses
    finally:
        await registries.close()
        images.store.db.close()


def test_pull_from_mirror(registry: Registry, busybox_tar: Path, tmp_path: Path) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"docker-archive:{busybox_tar}",
                    f"docker://{registry.address}/library/busybox:mirrored"],
                   check=True, capture_output=True, timeout=120)
    statuses = asyncio.run(pull_through_mirror(tmp_path / "image",
                                               f"http://{registry.address}"))
    assert statuses[0] == "Pulling from library/busybox"
    assert statuses[-1] == "Status: Downloaded newer image for busybox:mirrored"
