"""Docker's JSON views of an image (list, inspect, history, removal)."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from berth.image.v1 import image_pb2
from services.common.image_config import config_to_json
from services.gateway.params import ApiVersion


def created_unix(created: str) -> int:
    if not created:
        return 0
    main = created.split(".")[0].rstrip("Z")
    with contextlib.suppress(ValueError):
        return int(datetime.fromisoformat(main + "+00:00").timestamp())
    return 0


def summary_json(image: image_pb2.Image, version: ApiVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Containers": -1, "Created": created_unix(image.created),
        "Id": image.id, "Labels": dict(image.labels) or None, "ParentId": image.parent,
        "RepoDigests": list(image.repo_digests), "RepoTags": list(image.repo_tags),
        "SharedSize": image.shared_size, "Size": image.size,
    }
    if version < (1, 44):
        out["VirtualSize"] = image.size
    return out


def manifests_json(image: image_pb2.Image, container_ids: list[str]) -> list[dict[str, Any]]:
    """Docker's ManifestSummary list (API 1.47+) for a one-platform image: its
    manifest as pulled (the repo digest) or as it would be pushed, with the
    image's platform and the containers made from it."""
    digest = next((d.split("@", 1)[1] for d in image.repo_digests if "@" in d), image.id)
    platform = {"architecture": image.architecture, "os": image.os,
                **({"variant": image.variant} if image.variant else {})}
    return [{
        "ID": digest,
        "Descriptor": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "digest": digest, "platform": platform},
        "Available": True, "Size": {"Total": image.size, "Content": image.size},
        "Kind": "image",
        "ImageData": {"Platform": platform, "Containers": container_ids,
                      "Size": {"Unpacked": image.size}},
    }]


def inspect_json(image: image_pb2.Image, version: ApiVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Id": image.id, "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests), "Parent": image.parent,
        "Comment": image.comment, "Created": image.created,
        "DockerVersion": image.docker_version, "Author": image.author,
        "Config": config_to_json(image.config), "Architecture": image.architecture,
        "Os": image.os, "Size": image.size,
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": list(image.layers)},
        "Metadata": {"LastTagTime": image.last_tag_time or "0001-01-01T00:00:00Z"},
    }
    if image.variant:
        out["Variant"] = image.variant
    if version < (1, 44):
        out["VirtualSize"] = image.size
    if version < (1, 45):
        out["Container"] = ""
        out["ContainerConfig"] = config_to_json(image_pb2.ImageConfig())
    return out


def history_json(item: image_pb2.HistoryItem) -> dict[str, Any]:
    return {"Id": item.id, "Created": item.created, "CreatedBy": item.created_by,
            "Tags": list(item.tags) or None, "Size": item.size, "Comment": item.comment}


def delete_items_json(items: Any) -> list[dict[str, str]]:
    return [{"Untagged": i.untagged} if i.untagged else {"Deleted": i.deleted} for i in items]
