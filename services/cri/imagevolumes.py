"""Image volumes (a CRI Mount with an image): the image's layers, leased
from the image service, mounted read-only on the host under
D/cri/imagevolumes/<container id>/<n> and bound into the container like any
host path. Removing the container unmounts them and ends the lease."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from berth.image.v1 import image_pb2
from k8s.runtime.v1 import api_pb2
from services.common.config import Config
from services.common.errors import Internal, InvalidArgument, NotFound
from services.cri.peers import OWNER, Peers


async def _mount(*args: str, cwd: str | None = None) -> None:
    process = await asyncio.create_subprocess_exec(
        "mount", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, cwd=cwd)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise Internal(f"mount failed: {err.decode(errors='replace').strip()}")


def holder(cid: str, index: int) -> str:
    """The image service's lease holder of a container's `index`th image volume."""
    return f"cri-image-volume-{cid}-{index}"


class ImageVolumes:
    def __init__(self, config: Config, peers: Peers) -> None:
        self._root = config.service_dir("cri") / "imagevolumes"
        self._peers = peers

    async def mount(self, cid: str, index: int, mount: api_pb2.Mount) -> tuple[str, str]:
        """The host path to bind for the container's `index`th mount, and the
        image ID (reported back as the mount's image_ref)."""
        if not mount.readonly:
            raise InvalidArgument("an image volume must be read-only")
        image = await self._peers.inspect_image(mount.image.image)
        if image is None:
            raise NotFound(f"image {mount.image.image!r} of an image volume not found")
        lease = await self._peers.images.AcquireRootfs(
            image_pb2.AcquireRootfsRequest(image=image.id, holder=holder(cid, index),
                                          owner=OWNER))
        target = self._root / cid / str(index)
        target.mkdir(parents=True, exist_ok=True)
        lowers = list(lease.lower_dirs)
        if len(lowers) == 1:
            await _mount("--bind", "-o", "ro", lowers[0], str(target))
        else:
            # Relative to their common parent, so many layers fit in a page.
            parent = os.path.commonpath(lowers)
            relative = [os.path.relpath(d, parent) for d in lowers]
            await _mount("-t", "overlay", "overlay", "-o", f"lowerdir={':'.join(relative)}",
                         str(target), cwd=parent)
        source = target / mount.image_sub_path if mount.image_sub_path else target
        resolved = Path(os.path.realpath(source))
        if not resolved.is_relative_to(target.resolve()) or not resolved.exists():
            raise InvalidArgument(f"sub path {mount.image_sub_path!r} does not exist in "
                                  f"image {mount.image.image!r}")
        return str(resolved), image.id

    async def release(self, cid: str) -> None:
        """Unmount the container's image volumes and end their leases."""
        directory = self._root / cid
        if not directory.exists():
            return
        mounted = {line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()}
        for target in sorted(directory.iterdir()):
            # A one-layer image is a bind mount on the same file system, which
            # Path.is_mount cannot tell from a directory.
            if str(target) in mounted:
                process = await asyncio.create_subprocess_exec(
                    "umount", "-l", str(target), stderr=asyncio.subprocess.DEVNULL)
                await process.wait()
            await self._peers.images.ReleaseRootfs(
                image_pb2.ReleaseRootfsRequest(holder=holder(cid, int(target.name))))
        await asyncio.to_thread(shutil.rmtree, directory, True)
