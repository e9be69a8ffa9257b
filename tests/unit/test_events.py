"""The shared event bus: replay window, live follow, Docker filter semantics."""

from __future__ import annotations

import asyncio
import time

from berth.types.v1 import types_pb2
from services.common.events import EventBus, matches
from services.common.filters import Filters


def _filters(**values: list[str]) -> Filters:
    return Filters(values)


def test_filters_are_or_within_and_across_keys() -> None:
    event = types_pb2.Event(type="container", action="start", actor_id="abc123",
                            attributes={"name": "web", "com.example": "1"})
    assert matches(event, _filters(type=["container", "image"]))
    assert matches(event, _filters(container=["web"], event=["start", "die"]))
    assert matches(event, _filters(container=["abc"]))
    assert not matches(event, _filters(container=["web"], event=["die"]))
    assert matches(event, _filters(label=["com.example=1"]))
    assert not matches(event, _filters(label=["com.example=2"]))
    assert not matches(event, _filters(image=["web"]))


def test_image_filter_matches_names_without_tag_and_container_images() -> None:
    pulled = types_pb2.Event(type="image", action="pull", actor_id="busybox:latest",
                             attributes={"name": "busybox:latest"})
    started = types_pb2.Event(type="container", action="start", actor_id="c1",
                              attributes={"image": "127.0.0.1:5000/app:v1"})
    assert matches(pulled, _filters(image=["busybox"]))
    assert matches(pulled, _filters(image=["busybox:latest"]))
    assert not matches(pulled, _filters(image=["alpine"]))
    assert matches(started, _filters(image=["127.0.0.1:5000/app"]))
    assert not matches(started, _filters(image=["127.0.0.1"]))


def test_replay_since_until_then_stop() -> None:
    async def scenario() -> list[str]:
        bus = EventBus("volume")
        since = time.time_ns()
        bus.publish("create", "v1")
        bus.publish("destroy", "v1")
        request = types_pb2.SubscribeRequest(since_nano=since, until_nano=time.time_ns())
        return [e.action async for e in bus.subscribe(request)]
    assert asyncio.run(scenario()) == ["create", "destroy"]


def test_live_subscribers_see_new_events() -> None:
    async def scenario() -> str:
        bus = EventBus("network")
        stream = bus.subscribe(types_pb2.SubscribeRequest())
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        bus.publish("create", "n1")
        event = await asyncio.wait_for(first, 1)
        await stream.aclose()
        return event.action
    assert asyncio.run(scenario()) == "create"


def test_daemon_filter_matches_the_daemon_id_or_name_or_a_prefix_as_moby() -> None:
    reload = types_pb2.Event(type="daemon", action="reload", actor_id="8C28-001D-B4C2",
                             attributes={"name": "vm", "labels": "[]"})
    assert matches(reload, _filters(type=["daemon"]))
    for value in ("vm", "v", "8C28-001D-B4C2", "8C28"):
        assert matches(reload, _filters(daemon=[value]))
    assert matches(reload, _filters(daemon=["other", "vm"], event=["reload"]))
    assert not matches(reload, _filters(daemon=["other"]))
    assert not matches(reload, _filters(daemon=["vm"], type=["container"]))
    started = types_pb2.Event(type="container", action="start", actor_id="8C28",
                              attributes={"name": "vm"})
    assert not matches(started, _filters(daemon=["vm"]))
    assert matches(started, _filters(container=["v"]))
