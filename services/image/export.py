"""`docker save`: one tar that is both a docker-archive (manifest.json,
repositories) and an OCI image layout (oci-layout, index.json, blobs/),
as Docker 25+ writes it. Layers are written uncompressed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from services.common.errors import Internal
from services.image import archive, reference
from services.image.images import Images
from services.image.layers import decompressed
from services.image.reference import ImageRef
from services.image.store import LayerBlob
from services.image.thread_pipe import CHUNK

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EPOCH = 0


@dataclass
class SaveItem:
    """One image to save, with what the writer thread needs read up front."""

    image_id: str
    refs: list[ImageRef] = field(default_factory=list)
    config: bytes = b""
    layers: list[tuple[str, LayerBlob]] = field(default_factory=list)  # (diff ID, blob)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = EPOCH
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = EPOCH
    tar.addfile(info)


class Exporter:
    """Writes the archive; runs in a thread."""

    def __init__(self, images: Images) -> None:
        self.images = images
        self.tar: tarfile.TarFile
        self.written: set[str] = set()

    def _blob_name(self, digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    def _add_blob(self, digest: str, data: bytes) -> None:
        if digest not in self.written:
            _add_bytes(self.tar, self._blob_name(digest), data)
            self.written.add(digest)

    def _add_layer(self, diff_id: str, blob: LayerBlob) -> int:
        """Write the uncompressed layer tar; returns its size."""
        path = self.images.content.path(blob.digest)
        scratch: Path | None = None
        if blob.digest != diff_id:
            scratch = self.images.content.temp_path(".tar")
            with path.open("rb") as source, scratch.open("wb") as target:
                shutil.copyfileobj(decompressed(source), target, CHUNK)
            path = scratch
        try:
            size = path.stat().st_size
            if diff_id not in self.written:
                info = tarfile.TarInfo(self._blob_name(diff_id))
                info.size = size
                info.mtime = EPOCH
                with path.open("rb") as layer:
                    self.tar.addfile(info, layer)
                self.written.add(diff_id)
            return size
        finally:
            if scratch is not None:
                scratch.unlink(missing_ok=True)

    def write_to(self, items: list[SaveItem]) -> Callable[[IO[bytes]], None]:
        """The work for a thread: write the archive of `items` to its sink."""
        def work(out: IO[bytes]) -> None:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                              bufsize=CHUNK, copybufsize=CHUNK) as tar:
                self.tar = tar
                self._write(items)
        return work

    def _write(self, items: list[SaveItem]) -> None:
        _add_dir(self.tar, "blobs")
        _add_dir(self.tar, "blobs/sha256")
        docker_manifest: list[dict[str, Any]] = []
        repositories: dict[str, dict[str, str]] = {}
        index: list[dict[str, Any]] = []
        for item in items:
            config_bytes = item.config
            self._add_blob(item.image_id, config_bytes)
            diff_ids = [diff_id for diff_id, _ in item.layers]
            layers = [{"mediaType": OCI_LAYER, "digest": d, "size": self._add_layer(d, blob)}
                      for d, blob in item.layers]
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": item.image_id,
                           "size": len(config_bytes)},
                "layers": layers}, separators=(",", ":")).encode()
            manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            self._add_blob(manifest_digest, manifest)
            tags = [ref for ref in item.refs if ref.tag]
            descriptor = {"mediaType": OCI_MANIFEST, "digest": manifest_digest,
                          "size": len(manifest)}
            for ref in tags or [None]:
                entry = dict(descriptor)
                if ref is not None:
                    entry["annotations"] = {archive.CONTAINERD_NAME: str(ref),
                                            archive.OCI_REF_NAME: ref.tag}
                index.append(entry)
            docker_manifest.append({
                "Config": self._blob_name(item.image_id),
                "RepoTags": [ref.familiar for ref in tags] or None,
                "Layers": [self._blob_name(d) for d in diff_ids]})
            for ref in tags:
                repositories.setdefault(ref.familiar_name, {})[ref.tag] = (
                    item.image_id.removeprefix("sha256:"))
        _add_bytes(self.tar, "index.json", json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}).encode())
        _add_bytes(self.tar, "manifest.json", json.dumps(docker_manifest).encode())
        _add_bytes(self.tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        if repositories:
            _add_bytes(self.tar, "repositories", json.dumps(repositories).encode())


def plan(images: Images, names: list[str]) -> list[SaveItem]:
    """What to save for each name: a tag saves that tag, a bare repository
    every tag of it, an ID the image alone."""
    items: dict[str, SaveItem] = {}
    for name in names:
        image_id = images.resolve(name)
        item = items.setdefault(image_id, SaveItem(image_id))
        if reference.looks_like_id(name) and not images.store.resolve_ref(
                str(reference.parse(name))):
            continue
        ref = reference.parse(name)
        bare = ":" not in name.rsplit("/", 1)[-1] and "@" not in name
        if bare:
            for image, refs in images.store.all_refs().items():
                for text in refs:
                    other = reference.parse(text)
                    if other.name == ref.name and other.tag:
                        items.setdefault(image, SaveItem(image)).refs.append(other)
        elif ref.tag:
            item.refs.append(ref)
    for item in items.values():
        item.config = images.content.read(item.image_id)
        for diff_id in images.record_diff_ids(item.image_id):
            blobs = images.store.layer_blobs(diff_id)
            if not blobs:
                raise Internal(f"no content for layer {diff_id}")
            item.layers.append((diff_id, blobs[0]))
    return list(items.values())
