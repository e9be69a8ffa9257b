"""Adding images: layer blobs stored and unpacked (verified against their
diff IDs), image configs registered, and `docker load` of an archive.
Pulls (distribution.py) and commits/imports (authoring.py) add through here."""

from __future__ import annotations

import asyncio
import json
import shutil
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from services.common.errors import Internal, InvalidArgument
from services.image import archive, platforms, reference
from services.image.images import Images
from services.image.layers import Unpacked, chain_ids, decompressed
from services.image.progress import Message, short
from services.image.removal import Removal
from services.image.store import LayerBlob

LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@dataclass
class LayerSource:
    """How to get one layer in: its expected diff ID and an opener of its blob."""

    diff_id: str
    open: Callable[[], IO[bytes]] | None = None
    media_type: str = LAYER_TAR
    blob_digest: str = ""  # set when the blob is already in the content store


class Ingest:
    def __init__(self, images: Images, removal: Removal) -> None:
        self.images = images
        self.removal = removal
        self.store = images.store
        self.content = images.content
        self._layer_locks: dict[str, asyncio.Lock] = {}

    @contextmanager
    def adding(self, *keys: str) -> Iterator[None]:
        """Pin `keys` while an image is added; if adding fails, collect what
        it left behind once they are unpinned."""
        try:
            with self.images.pinned(*keys):
                yield
        except BaseException:
            self.removal.collect_garbage()
            raise

    def store_tar(self, path: Path) -> str:
        """Store the uncompressed form of a (maybe compressed) tar; returns its
        digest, pinned for the caller to unpin (runs in a thread)."""
        with path.open("rb") as raw, self.content.writer() as writer:
            shutil.copyfileobj(decompressed(raw), writer, 1 << 20)
            self.images.pin(writer.digest)
        return writer.digest

    async def add_layer(self, source: LayerSource, chain: str, parent: str) -> None:
        lock = self._layer_locks.setdefault(chain, asyncio.Lock())
        async with lock:
            if self.store.layer(chain) is None:
                known = {blob.digest for blob in self.store.all_layer_blobs()}
                digest, size, unpacked = await asyncio.to_thread(
                    self._store_and_unpack, source, chain, known)
                try:
                    self.store.add_layer_blob(LayerBlob(source.diff_id, digest,
                                                        source.media_type, size))
                    self.store.add_layer(chain, source.diff_id, parent, unpacked.size)
                finally:
                    self.images.unpin(digest)
        self._layer_locks.pop(chain, None)

    def _store_and_unpack(self, source: LayerSource, chain: str,
                known_blobs: set[str]) -> tuple[str, int, Unpacked]:
        """Store the blob, unpack it, verify the diff ID (runs in a thread).
        The blob comes back pinned for the caller to unpin once recorded."""
        if source.blob_digest:
            digest = source.blob_digest
            size = self.content.path(digest).stat().st_size
            self.images.pin(digest)
        else:
            if source.open is None:
                raise Internal(f"no content for layer {source.diff_id}")
            with source.open() as stream, self.content.writer() as writer:
                shutil.copyfileobj(stream, writer, 1 << 20)
                self.images.pin(writer.digest)
            digest, size = writer.digest, writer.size
        try:
            with self.content.path(digest).open("rb") as blob:
                unpacked = self.images.layers.unpack(blob, chain, source.diff_id)
        except BaseException:
            self.images.unpin(digest)
            if digest not in known_blobs:
                self.content.delete(digest)
            raise
        return digest, size, unpacked

    def register(self, config_bytes: bytes, parent: str = "") -> str:
        """Record an image whose layers are all present; returns its ID."""
        try:
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise InvalidArgument(f"invalid image config: {exc}") from exc
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        size = 0
        for chain in chain_ids(diff_ids):
            layer = self.store.layer(chain)
            if layer is None:
                raise InvalidArgument(f"layer {chain} is missing")
            size += layer["size"]
        image_id = self.content.put(config_bytes)
        self.store.add_image(image_id, parent, size)
        self.images.refresh_metrics()
        return image_id

    # docker load.
    async def load(self, tar_path: Path, quiet: bool, platform: str = ""
                   ) -> AsyncIterator[Message]:
        """Load every image of an archive (of `platform` only, when given),
        with Docker's output lines."""
        wanted = platforms.Platform.parse(platform) if platform else None
        try:
            tar = await asyncio.to_thread(tarfile.open, tar_path)
        except tarfile.TarError as exc:
            # Go's archive/tar words it so, and Docker passes it on.
            raise InvalidArgument("archive/tar: invalid tar header") from exc
        try:
            try:
                found = await asyncio.to_thread(archive.read_archive, tar)
            except tarfile.TarError as exc:
                raise InvalidArgument(f"invalid archive: {exc}") from exc
            for image in found:
                if wanted and not platforms.matches(wanted,
                                                    archive.config_document(image.config)):
                    continue
                async for message in self._load_one(tar, image, quiet):
                    yield message
        finally:
            tar.close()

    async def _load_one(self, tar: tarfile.TarFile, image: archive.ArchivedImage,
                        quiet: bool) -> AsyncIterator[Message]:
        config = archive.config_document(image.config)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(image.layer_members):
            raise InvalidArgument("invalid archive: layer count does not match the config")
        refs = [reference.parse(tag) for tag in image.repo_tags]
        chains = chain_ids(diff_ids)
        with self.adding(*chains):
            for i, (diff_id, member) in enumerate(zip(diff_ids, image.layer_members,
                                                      strict=True)):
                source = LayerSource(diff_id=diff_id, open=_opener(tar, member))
                await self.add_layer(source, chains[i], chains[i - 1] if i else "")
                if not quiet:
                    size = self.store.layer(chains[i])["size"]
                    yield Message("Loading layer", id=short(diff_id), current=size,
                                  total=size)
            image_id = self.register(image.config)
        for ref in refs:
            previous = self.images.set_reference(ref, image_id)
            if previous and previous != image_id:
                yield Message(stream=f"The image {ref.familiar} already exists, renaming the "
                                     f"old one with ID {previous} to empty string\n")
        self.images.events.publish("load", image_id, self.images.event_attrs(image_id, image_id))
        for line in [f"Loaded image: {ref.familiar}" for ref in refs] or [
                f"Loaded image ID: {image_id}"]:
            yield Message(stream=line + "\n")


def _opener(tar: tarfile.TarFile, member: str) -> Callable[[], IO[bytes]]:
    return lambda: archive.open_member(tar, member)
