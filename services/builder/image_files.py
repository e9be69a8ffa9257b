"""An image's files as a build reads them, through the container service
only (the builder may run on another host than the image data): a
container of the image, made on first use and kept (its file system kept
mounted) until the build ends, answers StatPath for destination checks and
GetArchive for the paths a step copies out. Nothing else of the image is fetched, and a step taken
from the cache asks for nothing at all."""

from __future__ import annotations

import asyncio
import io
import itertools
import posixpath
import tarfile
from pathlib import Path

from berth.container.v1 import container_pb2
from berth.types.v1 import types_pb2
from services.builder.copier import ContentDigests
from services.builder.peers import Peers
from services.builder.store import CacheStore
from services.common import gomode
from services.common.peers import PeerStream


class ImageFiles:
    """One image's files for one build; `close` removes its container.
    The image "" (scratch) has no files."""

    def __init__(self, image_id: str, peers: Peers, cache: CacheStore, scratch: Path) -> None:
        self.image_id = image_id
        self.digests = ContentDigests()
        self._peers = peers
        self._cache = cache
        self._scratch = scratch
        self._loop = asyncio.get_running_loop()
        self._container_id = ""
        self._mounted: PeerStream | None = None
        self._creating = asyncio.Lock()
        self._stats: dict[str, container_pb2.PathStat | None] = {}
        self._fetched: dict[str, Path] = {}
        self._numbers = itertools.count()

    async def _container(self) -> str:
        async with self._creating:
            if not self._container_id:
                request = container_pb2.CreateContainerRequest(
                    config=container_pb2.ContainerConfig(
                        image=self.image_id, cmd=types_pb2.StringList(values=["true"])))
                self._container_id, _ = await self._peers.create_container(request)
                self._cache.hold("container", self._container_id)
                self._mounted = await self._peers.keep_mounted(self._container_id)
        return self._container_id

    async def close(self) -> None:
        """Unmount and remove the container; one that could not be removed
        stays held, for crash recovery to retry."""
        if self._mounted is not None:
            self._mounted.cancel()
            self._mounted = None
        container_id, self._container_id = self._container_id, ""
        if container_id and await self._peers.remove_container(container_id):
            self._cache.let_go("container", container_id)

    async def _stat(self, path: str) -> container_pb2.PathStat | None:
        """`path`'s own stat (a last symlink not followed), None when missing."""
        if not self.image_id:
            return None
        if path not in self._stats:
            self._stats[path] = await self._peers.stat_path(await self._container(), path)
        return self._stats[path]

    async def resolve(self, path: str) -> tuple[str, container_pb2.PathStat] | None:
        """`path` with every symlink followed inside the image, and its stat;
        None when it leads nowhere."""
        # normpath keeps a leading "//" (POSIX leaves its meaning open).
        path = posixpath.normpath("/" + path.lstrip("/"))
        info = await self._stat(path)
        if info is not None and info.mode & gomode.SYMLINK:
            path = info.link_target
            info = await self._stat(path)
        return None if info is None else (path, info)

    async def exists(self, path: str) -> bool:
        return await self.resolve(path) is not None

    def exists_from_thread(self, path: str) -> bool:
        """`exists` for code running in a worker thread (the layer writer):
        the question goes to the build's event loop."""
        return asyncio.run_coroutine_threadsafe(self.exists(path), self._loop).result()

    async def is_dir(self, path: str) -> bool:
        found = await self.resolve(path)
        return found is not None and bool(found[1].mode & gomode.DIR)

    async def read_text(self, path: str) -> str:
        """A regular file's text; "" when it is missing or no regular file."""
        found = await self.resolve(path)
        if found is None or found[1].mode & gomode.NOT_REGULAR:
            return ""
        data = io.BytesIO()
        async for chunk in self._peers.get_archive(await self._container(), found[0]):
            data.write(chunk)
        data.seek(0)
        with tarfile.open(fileobj=data) as tar:
            member = tar.next()
            content = tar.extractfile(member) if member is not None else None
            return content.read().decode(errors="replace") if content is not None else ""

    async def fetch(self, path: str) -> Path | None:
        """A local copy of `path` (symlinks followed inside the image), made
        once per build; None when it leads nowhere."""
        found = await self.resolve(path)
        if found is None:
            return None
        target = found[0]
        if target not in self._fetched:
            self._fetched[target] = await self._copy_out(target)
        return self._fetched[target]

    async def _copy_out(self, path: str) -> Path:
        """GetArchive of `path`, unpacked in a directory of its own."""
        number = next(self._numbers)
        place, archive = self._scratch / str(number), self._scratch / f"{number}.tar"
        self._scratch.mkdir(parents=True, exist_ok=True)
        # "/." names the root's entries "./..." rather than "/...".
        asked = path if path != "/" else "/."
        try:
            with archive.open("wb") as out:
                async for chunk in self._peers.get_archive(await self._container(), asked):
                    await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(unpack_tree, archive, place)
        finally:
            archive.unlink(missing_ok=True)
        return place / posixpath.basename(path) if path != "/" else place


def unpack_tree(archive: Path, target: Path) -> None:
    """Extract a file system tar into `target` as is: owners, modes (setuid
    included), devices and links; names that would land outside are refused."""
    target.mkdir(parents=True)

    def checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        tarfile.tar_filter(member, dest)
        return member
    with tarfile.open(archive) as tar:
        tar.extractall(target, numeric_owner=True, filter=checked)
