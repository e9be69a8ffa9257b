"""The gateway's reading of JSON bodies and query parameters: each wrong
type, out-of-range integer or malformed body is Docker's 400 (or a 413),
never an exception that would be a 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from services.gateway.app import observe
from services.gateway.convert.container_create import CREATE_REQUEST, create_request
from services.gateway.errors import HTTPError
from services.gateway.params import (
    LATEST_API_VERSION,
    MAX_JSON_BODY,
    Fields,
    api_version,
    filters,
    integer,
    json_body,
    parse_api_version,
    terminal_size,
    timestamp,
)


def create_error(body: Any) -> str:
    with pytest.raises(HTTPError) as caught:
        create_request("", "", Fields.of(body, CREATE_REQUEST))
    assert caught.value.status == 400
    return caught.value.message


@pytest.mark.parametrize("body, message", [
    ([1, 2], "json: cannot unmarshal array into Go value of type container.CreateRequest"),
    ({"HostConfig": "x"}, "json: cannot unmarshal string into Go struct field "
                          "CreateRequest.HostConfig of type container.HostConfig"),
    ({"Env": 5}, "json: cannot unmarshal number into Go struct field CreateRequest.Env "
                 "of type []string"),
    ({"Env": [5]}, "json: cannot unmarshal number into Go struct field CreateRequest.Env "
                   "of type string"),
    ({"Labels": ["a"]}, "json: cannot unmarshal array into Go struct field "
                        "CreateRequest.Labels of type map[string]string"),
    ({"Labels": {"a": 1}}, "json: cannot unmarshal number into Go struct field "
                           "CreateRequest.Labels of type string"),
    ({"Cmd": {"a": 1}}, "json: cannot unmarshal object into Go struct field CreateRequest.Cmd "
                        "of type strslice.StrSlice"),
    ({"Tty": "yes"}, "json: cannot unmarshal string into Go struct field CreateRequest.Tty "
                     "of type bool"),
    ({"HostConfig": {"Memory": 1e30}}, "json: cannot unmarshal number 1e+30 into Go struct "
                                       "field HostConfig.HostConfig.Memory of type int64"),
    ({"HostConfig": {"Memory": 1 << 63}}, "of type int64"),
    ({"HostConfig": {"Memory": 1.5}}, "number 1.5 into"),
    ({"HostConfig": {"BlkioWeight": 70000}}, "of type uint16"),
    ({"HostConfig": {"RestartPolicy": [None, None]}}, "cannot unmarshal array into Go struct "
                                                      "field HostConfig.HostConfig.RestartPolicy"),
    ({"HostConfig": {"RestartPolicy": {"MaximumRetryCount": 1 << 40}}}, "of type int32"),
    ({"HostConfig": {"PortBindings": {"80": [{"HostPort": 8080}]}}}, "of type string"),
    ({"HostConfig": {"Mounts": ["x"]}}, "of type mount.Mount"),
    ({"HostConfig": {"ConsoleSize": [-1, 2]}}, "of type uint32"),
    ({"NetworkingConfig": {"EndpointsConfig": {"n": []}}}, "of type network.EndpointSettings"),
])
def test_wrong_types_are_docker_400s(body: Any, message: str) -> None:
    assert message in create_error(body)


def test_nulls_are_zero_values() -> None:
    request = create_request("", "", Fields.of({
        "Image": "x", "Env": None, "Labels": None, "HostConfig": None, "Cmd": None,
        "NetworkingConfig": {"EndpointsConfig": {"n": None}}}, CREATE_REQUEST))
    assert request.config.image == "x" and not request.config.env
    assert not request.config.HasField("cmd")
    assert request.host_config.network_mode == "bridge"


@pytest.mark.parametrize("query, message", [
    ("h=-1&w=80", 'invalid resize height "-1": value out of range'),
    ("h=24&w=4294967296", 'invalid resize width "4294967296": value out of range'),
    ("h=24", 'invalid resize width "": invalid syntax'),
    ("h=2_4&w=80", 'invalid resize height "2_4": invalid syntax'),
])
def test_resize_sizes(query: str, message: str) -> None:
    with pytest.raises(HTTPError) as caught:
        terminal_size(make_mocked_request("POST", f"/x?{query}"))
    assert caught.value.message == message


def test_integer_query_parameters_keep_to_their_type() -> None:
    request = make_mocked_request("POST", "/x?t=99999999999999999999&limit=5")
    with pytest.raises(HTTPError) as caught:
        integer(request, "t", go_type="int32")
    assert caught.value.message == 'invalid value for t "99999999999999999999": value out of range'
    assert integer(request, "limit", go_type="int32") == 5
    assert terminal_size(make_mocked_request("POST", "/x?h=24&w=80")) == {"height": 24,
                                                                          "width": 80}


@pytest.mark.parametrize("raw", ['{"status":5}', '{"status":[1]}', '[1]', '{"a":', '[' * 5000])
def test_bad_filters_are_400(raw: str) -> None:
    with pytest.raises(HTTPError) as caught:
        filters(make_mocked_request("GET", f"/x?filters={raw}"))
    assert caught.value.status == 400


def test_filters_both_shapes() -> None:
    query = json.dumps({"label": ["a=b"], "status": {"running": True, "exited": False}})
    decoded = filters(make_mocked_request("GET", f"/x?filters={query}"))
    assert list(decoded.filters["label"].values) == ["a=b"]
    assert list(decoded.filters["status"].values) == ["running"]


async def echo_network_name(request: web.Request) -> web.Response:
    body = await json_body(request, "network.CreateRequest")
    return web.json_response({"Name": body.string("Name")})


async def post_bodies(bodies: list[bytes]) -> list[tuple[int, dict]]:
    app = web.Application(middlewares=[observe])
    app.router.add_post("/networks/create", echo_network_name)
    async with TestClient(TestServer(app)) as client:
        answers = []
        for body in bodies:
            response = await client.post("/networks/create", data=body)
            answers.append((response.status, await response.json()))
        return answers


def test_json_bodies_through_the_middleware() -> None:
    answers = asyncio.run(post_bodies([
        b'{"Name": "n1"}', b"", b"null", b"[1]", b'{"Name": 5}', b"[" * 100_000,
        b'{"Name": NaN}', b"{", b" " * (MAX_JSON_BODY + 1)]))
    assert answers[0] == (200, {"Name": "n1"})
    assert answers[1] == answers[2] == (200, {"Name": ""})
    assert answers[3] == (400, {"message": "json: cannot unmarshal array into Go value of "
                                           "type network.CreateRequest"})
    assert answers[4] == (400, {"message": "json: cannot unmarshal number into Go struct "
                                           "field CreateRequest.Name of type string"})
    assert answers[5] == (400, {"message": "invalid JSON: JSON nested too deeply"})
    assert [status for status, _ in answers[6:8]] == [400, 400]
    assert answers[8] == (413, {"message": "request body too large: JSON bodies are limited "
                                           "to 4 MiB"})


def test_timestamps_keep_to_int64() -> None:
    now = 1_000 * 1_000_000_000
    request = make_mocked_request("GET", "/x?since=1700000000.5&until=99999999999999999999")
    assert timestamp(request, "since", now) == 1_700_000_000_500_000_000
    assert timestamp(request, "other", now) == 0
    with pytest.raises(HTTPError) as caught:
        timestamp(request, "until", now)
    assert caught.value.message == ('invalid value for until: "99999999999999999999": '
                                    "value out of range")


def test_api_versions() -> None:
    assert api_version(make_mocked_request("GET", "/x")) == LATEST_API_VERSION
    assert parse_api_version("1.41") == (1, 41) < LATEST_API_VERSION
