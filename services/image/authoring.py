"""New images from a layer tar and a config: container commit, builds
(CommitLayer) and `docker import` with Dockerfile `changes`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import dockerfile

from services.common.errors import InvalidArgument
from services.common.version import VERSION
from services.image.images import Images, now_rfc3339
from services.image.ingest import Ingest, LayerSource
from services.image.layers import chain_ids
from services.image.reference import ImageRef

EMPTY_TAR = b"\0" * 1024
IMPORT_CHANGES = {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL",
                  "USER", "VOLUME", "WORKDIR"}


@dataclass
class NewImage:
    """What the new image's config says beside its runnable config."""

    config: dict[str, Any]
    parent: str = ""
    created_by: str = ""
    comment: str = ""
    author: str = ""
    empty_layer: bool = False
    container: str = ""
    container_config: dict[str, Any] | None = None
    architecture: str = ""
    os: str = ""
    tags: list[ImageRef] = field(default_factory=list)
    holder: str = ""                # a lease on the new image, taken as it is recorded
    holder_owner: str = ""


def image_config(images: Images, spec: NewImage, diff_id: str) -> bytes:
    """The config blob: the parent's layers and history plus this step."""
    parent = images.config(spec.parent) if spec.parent else {}
    diff_ids = list((parent.get("rootfs") or {}).get("diff_ids") or [])
    if not spec.empty_layer:
        diff_ids.append(diff_id)
    created = now_rfc3339()
    step: dict[str, Any] = {"created": created}
    for key, value in (("created_by", spec.created_by), ("author", spec.author),
                       ("comment", spec.comment)):
        if value:
            step[key] = value
    if spec.empty_layer:
        step["empty_layer"] = True
    config: dict[str, Any] = {
        "architecture": spec.architecture or parent.get("architecture") or "amd64",
        "os": spec.os or parent.get("os") or "linux",
        "config": spec.config, "created": created, "docker_version": VERSION,
        "history": [*(parent.get("history") or []), step],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if parent.get("variant"):
        config["variant"] = parent["variant"]
    if spec.author:
        config["author"] = spec.author
    if spec.comment:
        config["comment"] = spec.comment
    if spec.container:
        config["container"] = spec.container
    if spec.container_config is not None:
        config["container_config"] = spec.container_config
    return json.dumps(config, separators=(",", ":")).encode()


async def create_image(ingest: Ingest, spec: NewImage, layer_digest: str) -> str:
    """Add the layer blob `layer_digest` (an uncompressed tar, so its digest is
    its diff ID) on top of the parent and record the new image."""
    images = ingest.images
    if spec.parent:
        spec.parent = images.resolve(spec.parent)
    parent_diffs = images.record_diff_ids(spec.parent) if spec.parent else []
    chains = chain_ids([*parent_diffs, layer_digest])
    with images.pinned(layer_digest, *chains):
        if spec.empty_layer:
            config = image_config(images, spec, "")
        else:
            source = LayerSource(diff_id=layer_digest, blob_digest=layer_digest)
            await ingest.add_layer(source, chains[-1], chains[-2] if parent_diffs else "")
            config = image_config(images, spec, layer_digest)
        image_id = ingest.register(config, spec.parent)
        images.hold(image_id, spec.holder, spec.holder_owner)
    for ref in spec.tags:
        images.tag(image_id, ref)
    ingest.removal.collect_garbage()  # the layer blob, when nothing took it
    return image_id


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(values[i], _unquote(values[i + 1])) for i in range(0, len(values) - 1, 2)]


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply `docker import --change` / `commit --change` instructions."""
    text = "\n".join(changes)
    if not text.strip():
        return config
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        raise InvalidArgument(f"dockerfile parse error: {exc}") from exc
    for command in commands:
        name = command.cmd.upper()
        if name not in IMPORT_CHANGES:
            raise InvalidArgument(f"{command.cmd} is not a valid change command")
        values = list(command.value)
        if name in ("CMD", "ENTRYPOINT"):
            key = "Cmd" if name == "CMD" else "Entrypoint"
            config[key] = values if command.json else ["/bin/sh", "-c", " ".join(values)]
        elif name == "ENV":
            env = list(config.get("Env") or [])
            for key, value in _pairs(command.value):
                env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif name == "LABEL":
            config["Labels"] = {**(config.get("Labels") or {}), **dict(_pairs(command.value))}
        elif name == "EXPOSE":
            ports = config.get("ExposedPorts") or {}
            for port in values:
                ports[port if "/" in port else f"{port}/tcp"] = {}
            config["ExposedPorts"] = ports
        elif name == "VOLUME":
            config["Volumes"] = {**(config.get("Volumes") or {}), **{v: {} for v in values}}
        elif name == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []),
                                 command.original.split(None, 1)[1]]
        else:
            key = {"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}[name]
            config[key] = values[0]
    return config
