"""Each service's event stream: a bounded replay buffer plus live subscribers.

`Subscribe` RPCs replay buffered events from `since`, then follow live ones
until `until` (or forever); the gateway merges the streams of the services
it calls into Docker's /events.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from berth.types.v1 import types_pb2
from services.common.filters import Filters

# The keys Docker's /events accepts (some name objects berth does not have).
EVENT_FILTERS = {"config", "container", "daemon", "event", "image", "label", "network",
                 "node", "plugin", "scope", "secret", "service", "type", "volume"}
# Filter keys that name the actor of an event of the same type (berth
# publishes no config, node, plugin, secret or service events).
_ACTOR_FILTERS = {"container", "network", "volume", "config", "daemon", "node", "plugin",
                  "secret", "service"}


def event_filters(message: types_pb2.Filters) -> Filters:
    return Filters.from_message(message).checked(EVENT_FILTERS)


def matches(event: types_pb2.Event, filters: Filters) -> bool:
    """Docker's event filter semantics: OR within a key, AND across keys,
    every `label` expression on the event's attributes."""
    if not filters.match_labels(dict(event.attributes)):
        return False
    for key, accepted in filters.items():
        values = set(accepted)
        if not values or key == "label":
            continue
        if key == "type" and event.type not in values:
            return False
        if key == "event" and event.action.split(":")[0] not in values:
            return False
        if key == "scope" and event.scope not in values:
            return False
        if key in _ACTOR_FILTERS:
            if event.type != key:
                return False
            # As moby's FuzzyMatch: the ID or the name, or a prefix of either.
            names = [n for n in (event.actor_id, event.attributes.get("name", "")) if n]
            if not any(name.startswith(v) for name in names for v in values):
                return False
        if key == "image" and not _image_matches(event, values):
            return False
    return True


def _strip_tag(reference: str) -> str:
    """busybox:latest -> busybox, keeping a registry port (host:5000/x)."""
    name = reference.partition("@")[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def _image_matches(event: types_pb2.Event, values: set[str]) -> bool:
    """As moby: image events by ID or name, container events by their image,
    each also with the tag stripped."""
    if event.type == "image":
        names = {event.actor_id, event.attributes.get("name", "")}
    elif event.type == "container":
        names = {event.attributes.get("image", "")}
    else:
        return False
    names |= {_strip_tag(n) for n in names}
    return bool(names & values)


class EventBus:
    def __init__(self, event_type: str, capacity: int = 1024) -> None:
        self.event_type = event_type
        self._buffer: deque[types_pb2.Event] = deque(maxlen=capacity)
        self._subscribers: set[asyncio.Queue[types_pb2.Event]] = set()

    def publish(self, action: str, actor_id: str, attributes: dict[str, str] | None = None,
                event_type: str | None = None) -> types_pb2.Event:
        event = types_pb2.Event(
            type=event_type or self.event_type, action=action, actor_id=actor_id,
            attributes=attributes or {}, time_nano=time.time_ns(), scope="local",
        )
        self._buffer.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    async def subscribe(self, request: types_pb2.SubscribeRequest
                        ) -> AsyncIterator[types_pb2.Event]:
        filters = event_filters(request.filters)
        queue: asyncio.Queue[types_pb2.Event] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            until = request.until_nano or None
            if request.since_nano:
                for event in list(self._buffer):
                    in_window = event.time_nano >= request.since_nano and (
                        until is None or event.time_nano <= until)
                    if in_window and matches(event, filters):
                        yield event
            if until is not None and until <= time.time_ns():
                return
            while True:
                timeout = None if until is None else max(0, (until - time.time_ns()) / 1e9)
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    return
                if until is not None and event.time_nano > until:
                    return
                if matches(event, filters):
                    yield event
        finally:
            self._subscribers.discard(queue)
