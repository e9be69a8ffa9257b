"""One table of filter inputs over every list, prune and events endpoint of
every object type, on one engine: unknown keys are refused with Docker's
message, every `until` form `docker` takes is accepted, and the label and
name matchers select the same objects everywhere."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from berth.build.v1 import build_pb2_grpc
from berth.container.v1 import container_pb2_grpc
from berth.image.v1 import image_pb2_grpc
from berth.network.v1 import network_pb2_grpc
from berth.types.v1 import types_pb2
from berth.volume.v1 import volume_pb2_grpc
from tests.support.engine import Engine

GROUP = "berth.test.group"
ROLE = "berth.test.role"
KINDS = ("container", "image", "network", "volume")

LISTS = {"container": "/containers/json", "image": "/images/json",
         "network": "/networks", "volume": "/volumes"}
PRUNES = {"container": "/containers/prune", "image": "/images/prune",
          "network": "/networks/prune", "volume": "/volumes/prune", "build": "/build/prune"}
EVERY_ENDPOINT = ([("GET", path) for path in LISTS.values()]
                  + [("POST", path) for path in PRUNES.values()] + [("GET", "/events")])
UNTIL_ENDPOINTS = [("POST", PRUNES["container"]), ("GET", LISTS["image"]),
                   ("POST", PRUNES["image"]), ("POST", PRUNES["network"]),
                   ("POST", PRUNES["build"])]
# Every form of time `docker` takes, all well in the past or recent: a
# prune with any of them leaves this module's new objects alone.
TIMES = ["1h30m", "10m", "90s", "2023-11-14T22:13:20.123456789+01:00",
         "2023-11-14T22:13:20Z", "2023-11-14T22:13", "2023-11-14", "1700000000.5"]


def name_of(kind: str, role: str) -> str:
    return f"filters-{kind}-{role}"


def call(engine: Engine, method: str, path: str, filters: dict[str, list[str]],
         **params: str) -> requests.Response:
    api = engine.client().api
    if path == "/events":
        params.setdefault("until", f"{time.time():.9f}")  # replay only, then end
    send = api.get if method == "GET" else api.post
    return send(api._url(path), params={"filters": json.dumps(filters), **params})


def names_listed(engine: Engine, kind: str, filters: dict[str, list[str]]) -> set[str]:
    response = call(engine, "GET", LISTS[kind], filters, all="1")
    assert response.status_code == 200, response.text
    body: Any = response.json()
    if kind == "container":
        return {c["Names"][0].lstrip("/") for c in body}
    if kind == "image":
        return {tag.split(":")[0] for i in body for tag in i["RepoTags"] or []}
    if kind == "volume":
        return {v["Name"] for v in body["Volumes"]}
    return {n["Name"] for n in body}


@pytest.fixture(scope="module")
def objects(engine: Engine, busybox: str, tmp_path_factory: pytest.TempPathFactory
            ) -> float:
    """A "keep" and a "drop" object of every kind, labelled alike but for
    their role; the time just before they were made."""
    started = time.time()
    for role in ("keep", "drop"):
        labels = ["--label", f"{GROUP}=filters", "--label", f"{ROLE}={role}"]
        engine.docker("create", *labels, "--name", name_of("container", role), busybox, "true")
        engine.docker("network", "create", *labels, name_of("network", role))
        engine.docker("volume", "create", *labels, name_of("volume", role))
        context = tmp_path_factory.mktemp(f"context-{role}")
        (context / "Dockerfile").write_text(
            f"FROM {busybox}\nLABEL {GROUP}=filters {ROLE}={role}\nENV ROLE={role}\n")
        engine.docker("build", "-t", name_of("image", role), str(context), timeout=180)
    return started


@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT)
@pytest.mark.parametrize("key", ["bogus", "labels", "until!"])
def test_unknown_filter_key_is_refused(engine: Engine, objects: float, method: str, path: str,
                                       key: str) -> None:
    response = call(engine, method, path, {key: ["x"]})
    assert response.status_code == 400, response.text
    assert response.json()["message"] == f"invalid filter '{key}'"


SERVICE_STUBS = {"image": image_pb2_grpc.ImageServiceStub,
                 "container": container_pb2_grpc.ContainerServiceStub,
                 "network": network_pb2_grpc.NetworkServiceStub,
                 "volume": volume_pb2_grpc.VolumeServiceStub,
                 "build": build_pb2_grpc.BuildServiceStub}


@pytest.mark.parametrize("service", SERVICE_STUBS)
def test_event_subscriptions_refuse_unknown_keys_over_grpc(engine: Engine,
                                                           service: str) -> None:
    """Programs that subscribe without the gateway get the same refusal."""
    request = types_pb2.SubscribeRequest(since_nano=1, until_nano=time.time_ns())
    request.filters.filters["bogus"].values.append("x")
    with (grpc.insecure_channel(f"unix://{engine.exec_root}/{service}.sock") as channel,
          pytest.raises(grpc.RpcError) as raised):
        list(SERVICE_STUBS[service](channel).Subscribe(request))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "invalid filter 'bogus'"


@pytest.mark.parametrize(("method", "path"), UNTIL_ENDPOINTS)
@pytest.mark.parametrize("until", TIMES)
def test_every_until_form_is_accepted(engine: Engine, objects: float, method: str, path: str,
                                      until: str) -> None:
    response = call(engine, method, path, {"until": [until]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path"), UNTIL_ENDPOINTS)
def test_a_bad_until_is_refused(engine: Engine, objects: float, method: str,
                                path: str) -> None:
    response = call(engine, method, path, {"until": ["soon"]})
    assert response.status_code == 400, response.text
    assert "\"until\" filter expects a duration (e.g., '24h') or a timestamp" \
        in response.json()["message"]


def test_volume_prune_takes_no_until(engine: Engine, objects: float) -> None:
    response = call(engine, "POST", PRUNES["volume"], {"until": ["10m"]})
    assert response.status_code == 400
    assert response.json()["message"] == "invalid filter 'until'"


@pytest.mark.parametrize("since", TIMES)
def test_events_take_every_time_form(engine: Engine, objects: float, since: str) -> None:
    response = call(engine, "GET", "/events", {}, since=since)
    assert response.status_code == 200, response.text


def test_events_refuse_a_bad_time(engine: Engine) -> None:
    response = call(engine, "GET", "/events", {}, since="soon")
    assert response.status_code == 400
    assert "soon" in response.json()["message"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("filters", "roles"), [
    ({"label": [GROUP]}, {"keep", "drop"}),
    ({"label": [f"{GROUP}=filters"]}, {"keep", "drop"}),
    ({"label": [f"{ROLE}=keep"]}, {"keep"}),
    ({"label": [GROUP, f"{ROLE}=drop"]}, {"drop"}),
    ({"label": [GROUP, f"{ROLE}=none"]}, set()),
    ({"label": ["berth.test.absent"]}, set()),
])
def test_label_matchers_on_lists(engine: Engine, objects: float, kind: str,
                                 filters: dict[str, list[str]], roles: set[str]) -> None:
    assert names_listed(engine, kind, filters) & {name_of(kind, r) for r in ("keep", "drop")} \
        == {name_of(kind, role) for role in roles}


@pytest.mark.parametrize("kind", ["container", "network", "volume"])
@pytest.mark.parametrize(("pattern", "roles"), [
    ("^filters-[a-z]+-keep$", {"keep"}), ("filters-.*-(keep|drop)", {"keep", "drop"}),
    ("-dr", {"drop"}), ("^keep", set())])
def test_name_matchers_are_regular_expressions(engine: Engine, objects: float, kind: str,
                                               pattern: str, roles: set[str]) -> None:
    assert names_listed(engine, kind, {"name": [pattern]}) \
        == {name_of(kind, role) for role in roles}


def test_event_label_matchers(engine: Engine, objects: float) -> None:
    response = call(engine, "GET", "/events", {"label": [GROUP, f"{ROLE}=keep"]},
                    since=f"{objects:.9f}")
    assert response.status_code == 200, response.text
    events = [json.loads(line) for line in response.text.splitlines()]
    assert {e["Actor"]["Attributes"][ROLE] for e in events} == {"keep"}
    assert any(e["Type"] == "container" and e["Action"] == "create"
               and e["Actor"]["Attributes"]["name"] == name_of("container", "keep")
               for e in events)


PRUNE_EXTRA = {"image": {"dangling": ["false"]}, "volume": {"all": ["true"]}}
DELETED_KEY = {"container": "ContainersDeleted", "network": "NetworksDeleted",
               "volume": "VolumesDeleted", "image": "ImagesDeleted"}


def prune(engine: Engine, kind: str, filters: dict[str, list[str]]) -> dict:
    response = call(engine, "POST", PRUNES[kind], {**PRUNE_EXTRA.get(kind, {}), **filters})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("kind", ["container", "network", "image"])
def test_until_selects_what_prune_takes(engine: Engine, objects: float, kind: str) -> None:
    """Objects made in this module are newer than 1h30m (a minute from now
    takes them: test_label_matchers_on_prunes)."""
    for until in TIMES:
        assert not prune(engine, kind, {"label": [GROUP], "until": [until]}).get(
            DELETED_KEY[kind])
    assert names_listed(engine, kind, {"label": [GROUP]}) \
        == {name_of(kind, "keep"), name_of(kind, "drop")}


@pytest.mark.parametrize("kind", KINDS)
def test_label_matchers_on_prunes(engine: Engine, objects: float, kind: str) -> None:
    future = f"{time.time() + 60:.6f}"
    filters = {"label": [GROUP], "label!": [f"{ROLE}=keep"]}
    if kind != "volume":
        filters["until"] = [future]
    prune(engine, kind, filters)
    assert names_listed(engine, kind, {"label": [GROUP]}) == {name_of(kind, "keep")}
    prune(engine, kind, {"label": [f"{ROLE}=keep"], "label!": [GROUP]})
    assert names_listed(engine, kind, {"label": [GROUP]}) == {name_of(kind, "keep")}
    prune(engine, kind, {"label": [f"{GROUP}=filters", f"{ROLE}=keep"]})
    assert names_listed(engine, kind, {"label": [GROUP]}) == set()


def build_cache(engine: Engine) -> list[dict]:
    return engine.client().df()["BuildCache"] or []


def test_build_prune_filters_select_records(engine: Engine, objects: float,
                                            tmp_path: Path) -> None:
    records = build_cache(engine)
    assert records, "the module's builds left cache records"
    one = records[0]

    def pruned(filters: dict[str, list[str]], **params: str) -> list[str]:
        response = call(engine, "POST", PRUNES["build"], filters, **params)
        assert response.status_code == 200, response.text
        return response.json()["CachesDeleted"] or []

    assert pruned({"label": [GROUP]}, all="1") == []
    assert pruned({"id": ["^nomatch$"]}, all="1") == []
    assert pruned({"type": ["internal"]}, all="1") == []
    assert pruned({"inuse": []}, all="1") == []
    assert pruned({"until": ["1h30m"]}, all="1") == []
    assert pruned({"id": [f"^{one['ID']}$"], "description": [one["Description"]]},
                  all="1") == [one["ID"]]
    assert one["ID"] not in {r["ID"] for r in build_cache(engine)}
    response = call(engine, "POST", PRUNES["build"], {"id": ["a", "b"]})
    assert response.status_code == 400
    assert "filters expect only one value" in response.json()["message"]
