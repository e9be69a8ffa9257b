"""Reading image archives (`docker load`): docker-archive tars with a
manifest.json and OCI image layouts with an index.json."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any

from services.common.errors import InvalidArgument

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class ArchivedImage:
    """One image found in an archive: its config and the tar members of its layers."""

    config: bytes
    layer_members: list[str]
    repo_tags: list[str] = field(default_factory=list)


def open_member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    """A regular file of the archive, whether or not names start with `./`."""
    for candidate in (name, "./" + name):
        try:
            file = tar.extractfile(candidate)
        except KeyError:
            continue
        if file is not None:
            return file
    raise InvalidArgument(f"invalid archive: {name} is missing")


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    return open_member(tar, name).read()


def _json_member(tar: tarfile.TarFile, name: str) -> Any:
    try:
        return json.loads(_member_bytes(tar, name))
    except ValueError as exc:
        raise InvalidArgument(f"invalid archive: {name}: {exc}") from exc


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _docker_archive(tar: tarfile.TarFile) -> list[ArchivedImage]:
    manifest = _json_member(tar, "manifest.json")
    return [ArchivedImage(config=_member_bytes(tar, entry["Config"]),
                          layer_members=list(entry.get("Layers") or []),
                          repo_tags=list(entry.get("RepoTags") or []))
            for entry in manifest]


def _pick_manifest(tar: tarfile.TarFile, descriptor: dict) -> dict:
    """Follow nested indexes down to one image manifest (linux/amd64 first)."""
    while descriptor.get("mediaType") in INDEX_TYPES:
        index = _json_member(tar, _blob_name(descriptor["digest"]))
        candidates = index.get("manifests") or []
        if not candidates:
            raise InvalidArgument("invalid archive: empty image index")
        preferred = [m for m in candidates
                     if (m.get("platform") or {}).get("architecture") == "amd64"]
        descriptor = (preferred or candidates)[0]
    return _json_member(tar, _blob_name(descriptor["digest"]))


def _oci_layout(tar: tarfile.TarFile) -> list[ArchivedImage]:
    index = _json_member(tar, "index.json")
    images = []
    for descriptor in index.get("manifests") or []:
        manifest = _pick_manifest(tar, descriptor)
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME) or ""
        images.append(ArchivedImage(
            config=_member_bytes(tar, _blob_name(manifest["config"]["digest"])),
            layer_members=[_blob_name(layer["digest"]) for layer in manifest.get("layers") or []],
            repo_tags=[name] if name else []))
    return images


def read_archive(tar: tarfile.TarFile) -> list[ArchivedImage]:
    names = {name.removeprefix("./") for name in tar.getnames()}
    if "manifest.json" in names:
        return _docker_archive(tar)
    if "index.json" in names:
        return _oci_layout(tar)
    raise InvalidArgument("invalid archive: no manifest.json or index.json")
