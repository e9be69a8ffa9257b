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


def _typed(value: Any, kind: type, what: str) -> Any:
    """`value` when it has the JSON type `kind`: an archive is the client's."""
    if not isinstance(value, kind):
        raise InvalidArgument(f"invalid archive: {what} is not a JSON {kind.__name__}")
    return value


def _strings(value: Any, what: str) -> list[str]:
    return [_typed(item, str, f"an entry of {what}") for item in _typed(value or [], list, what)]


def _object_field(document: Any, key: str, kind: type, what: str) -> Any:
    return _typed(_typed(document, dict, what).get(key), kind, f"{what} {key}")


def _blob_name(digest: Any) -> str:
    algorithm, _, hexdigest = _typed(digest, str, "a digest").partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _docker_archive(tar: tarfile.TarFile) -> list[ArchivedImage]:
    manifest = _typed(_json_member(tar, "manifest.json"), list, "manifest.json")
    return [ArchivedImage(
                config=_member_bytes(tar, _object_field(entry, "Config", str, "manifest.json")),
                layer_members=_strings(entry.get("Layers"), "Layers"),
                repo_tags=_strings(entry.get("RepoTags"), "RepoTags"))
            for entry in manifest]


def _pick_manifest(tar: tarfile.TarFile, descriptor: dict) -> dict:
    """Follow nested indexes down to one image manifest (linux/amd64 first)."""
    while _typed(descriptor, dict, "a descriptor").get("mediaType") in INDEX_TYPES:
        index = _typed(_json_member(tar, _blob_name(descriptor.get("digest"))), dict,
                       "an image index")
        candidates = _typed(index.get("manifests") or [], list, "an index's manifests")
        if not candidates:
            raise InvalidArgument("invalid archive: empty image index")
        preferred = [m for m in candidates if isinstance(m, dict)
                     and (m.get("platform") or {}).get("architecture") == "amd64"]
        descriptor = (preferred or candidates)[0]
    return _typed(_json_member(tar, _blob_name(descriptor.get("digest"))), dict,
                  "an image manifest")


def _oci_layout(tar: tarfile.TarFile) -> list[ArchivedImage]:
    index = _typed(_json_member(tar, "index.json"), dict, "index.json")
    images = []
    for descriptor in _typed(index.get("manifests") or [], list, "index.json manifests"):
        manifest = _pick_manifest(tar, descriptor)
        annotations = _typed(descriptor.get("annotations") or {}, dict, "annotations")
        name = _typed(annotations.get(CONTAINERD_NAME) or "", str, CONTAINERD_NAME)
        config = _object_field(manifest, "config", dict, "an image manifest")
        layers = _typed(manifest.get("layers") or [], list, "an image manifest's layers")
        images.append(ArchivedImage(
            config=_member_bytes(tar, _blob_name(config.get("digest"))),
            layer_members=[_blob_name(_typed(layer, dict, "a layer").get("digest"))
                           for layer in layers],
            repo_tags=[name] if name else []))
    return images


def config_document(raw: bytes) -> dict:
    """An archived image's config as a JSON object, its diff IDs strings."""
    try:
        config = _typed(json.loads(raw), dict, "an image config")
    except ValueError as exc:
        raise InvalidArgument(f"invalid archive: an image config: {exc}") from exc
    rootfs = _typed(config.get("rootfs") or {}, dict, "an image config's rootfs")
    _strings(rootfs.get("diff_ids"), "an image config's diff_ids")
    return config


def read_archive(tar: tarfile.TarFile) -> list[ArchivedImage]:
    names = {name.removeprefix("./") for name in tar.getnames()}
    if "manifest.json" in names:
        return _docker_archive(tar)
    if "index.json" in names:
        return _oci_layout(tar)
    raise InvalidArgument("invalid archive: no manifest.json or index.json")
