"""The classic builder's `--cache-from`: images whose history serves as a
build cache (moby's image/cache ImageCache). A step is taken from a source
when the source's history starts with the parent's history and layers and
its next entry was made by the same command; the step's image is then the
source itself (its last entry) or an image restored from the source's
entry and layer on top of the parent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.common.errors import NotFound
from services.image.images import Images
from services.image.ingest import Ingest


@dataclass
class CacheHit:
    image_id: str
    source_id: str       # the source that served it: later steps look only there


def resolve_sources(images: Images, names: list[str]) -> list[str]:
    """Image IDs of the sources; Docker skips the ones it cannot find."""
    found = []
    for name in names:
        try:
            found.append(images.resolve(name))
        except NotFound:
            continue
    return found


def is_ancestor(images: Images, image_id: str, source_ids: list[str]) -> bool:
    """A local cache hit counts with --cache-from only when a source descends from it."""
    for source in source_ids:
        current = images.store.image(source)
        while current is not None and current.parent:
            if current.parent == image_id:
                return True
            current = images.store.image(current.parent)
    return False


def find(images: Images, ingest: Ingest, parent_id: str, source_ids: list[str],
         created_by: str, step_config: dict[str, Any]) -> CacheHit | None:
    parent = images.config(parent_id) if parent_id else None
    history_length = len(parent.get("history") or []) if parent else 0
    for source_id in source_ids:
        target = images.config(source_id)
        history = target.get("history") or []
        if not _valid_parent(target, parent) or len(history) <= history_length:
            continue
        if history[history_length].get("created_by", "") != created_by:
            continue
        if len(history) - 1 == history_length:
            return CacheHit(source_id, source_id)
        restored = _restore(ingest, parent_id, parent, target, history_length, step_config)
        return CacheHit(restored, source_id)
    return None


def _diff_ids(config: dict[str, Any] | None) -> list[str]:
    return list(((config or {}).get("rootfs") or {}).get("diff_ids") or [])


def _valid_parent(target: dict[str, Any], parent: dict[str, Any] | None) -> bool:
    history = target.get("history") or []
    if not history:
        return False
    parent_history = (parent or {}).get("history") or []
    parent_diffs = _diff_ids(parent)
    if not parent_history and not parent_diffs:
        return True
    if len(parent_history) >= len(history) or len(parent_diffs) > len(_diff_ids(target)):
        return False
    return history[:len(parent_history)] == parent_history and \
        _diff_ids(target)[:len(parent_diffs)] == parent_diffs


def _layer_at(target: dict[str, Any], index: int) -> str:
    """The diff ID the history entry `index` added; empty for a metadata step."""
    history = target["history"]
    if history[index].get("empty_layer"):
        return ""
    layer_index = sum(not entry.get("empty_layer") for entry in history[:index])
    return _diff_ids(target)[layer_index]


def _restore(ingest: Ingest, parent_id: str, parent: dict[str, Any] | None,
             target: dict[str, Any], index: int, step_config: dict[str, Any]) -> str:
    entry = target["history"][index]
    diff_ids = _diff_ids(parent)
    layer = _layer_at(target, index)
    if layer:
        diff_ids.append(layer)
    config: dict[str, Any] = {
        "architecture": target.get("architecture", ""), "os": target.get("os", ""),
        "config": step_config, "created": entry.get("created", ""),
        "history": [*((parent or {}).get("history") or []), entry],
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    for key in ("author", "os.version", "os.features"):
        if target.get(key):
            config[key] = target[key]
    return ingest.register(json.dumps(config, separators=(",", ":")).encode(), parent_id)
