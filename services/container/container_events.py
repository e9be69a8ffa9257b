"""Container events as Docker words them: an action on a container, with its
name, image and labels (and any extra) as attributes."""

from __future__ import annotations

from services.common.events import EventBus
from services.container.containers import Manager
from services.container.store import Container


class ContainerEvents:
    def __init__(self, bus: EventBus, manager: Manager) -> None:
        self.bus = bus
        self._manager = manager

    def publish(self, action: str, container: Container, **extra: str) -> None:
        self.bus.publish(action, container.id, self._manager.attributes(container, **extra))
