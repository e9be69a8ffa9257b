"""Docker's `daemon` events. The container service sends them for the
engine: it owns the host facts whose ID and name are the daemon's."""

from __future__ import annotations

import json

from services.common.engine_config import setting
from services.common.events import EventBus
from services.container.host import HostFacts


def go_bool(value: bool) -> str:
    return "true" if value else "false"


def go_json(values: list[str]) -> str:
    """A list as Go's json.Marshal writes it: compact, with <, > and & escaped."""
    text = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def reload_attributes(facts: HostFacts, engine: dict) -> dict[str, str]:
    """The settings after a reload that berth has too, with dockerd's
    attribute names and formats, and the engine's name."""
    return {
        "debug": go_bool(facts.debug),
        "labels": go_json(facts.labels),
        "insecure-registries": go_json(facts.insecure_registries),
        "registry-mirrors": go_json(facts.registry_mirrors),
        "max-concurrent-downloads": str(setting(engine, "max-concurrent-downloads")),
        "max-concurrent-uploads": str(setting(engine, "max-concurrent-uploads")),
        "live-restore": go_bool(facts.live_restore),
        "default-runtime": facts.default_runtime,
        "runtimes": " ".join(f"{name}:{path}" for name, path in facts.runtimes.items()),
        "name": facts.name,
    }


def announce_reload(events: EventBus, facts: HostFacts, engine: dict) -> None:
    events.publish("reload", facts.id, reload_attributes(facts, engine), event_type="daemon")
