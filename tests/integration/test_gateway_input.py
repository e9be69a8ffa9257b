"""The gateway against bad input and clients that leave, on a real engine:
every malformed request is a 4xx with Docker's message (never a 500), JSON
bodies are bounded without the gateway holding them, and closing a stream
is no error."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine import BERTH, REPO, Engine
from tests.support.polling import wait_for

MiB = 1 << 20


@pytest.fixture(scope="module")
def api(engine: Engine) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(uds=str(engine.socket))
    with httpx.Client(transport=transport, base_url="http://berth/v1.50", timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def container(engine: Engine, busybox: str) -> str:
    return engine.docker("run", "-d", "--name", "target", busybox, "sleep", "600"
                         ).stdout.decode().strip()


def gateway_status(engine: Engine) -> dict[str, Any]:
    out = subprocess.run([*BERTH, "status", "--exec-root", str(engine.exec_root), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    return {row["service"]: row for row in json.loads(out.stdout)}["gateway"]


def http_counts(engine: Engine, route: str) -> dict[str, float]:
    """berth_http_requests_total of `route`, by status code."""
    text = httpx.get(gateway_status(engine)["metrics_url"], timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "berth_http_requests_total"
                    and sample.labels["route"] == route):
                code = sample.labels["code"]
                counts[code] = counts.get(code, 0) + sample.value
    return counts


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def message(response: httpx.Response) -> str:
    return response.json()["message"]


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("body, expected", [
    ({"Image": "busybox", "HostConfig": "x"},
     "json: cannot unmarshal string into Go struct field CreateRequest.HostConfig of type "
     "container.HostConfig"),
    ({"Image": "busybox", "Env": 5},
     "json: cannot unmarshal number into Go struct field CreateRequest.Env of type []string"),
    ({"Image": "busybox", "Labels": ["a=b"]},
     "json: cannot unmarshal array into Go struct field CreateRequest.Labels of type "
     "map[string]string"),
    ({"Image": "busybox", "HostConfig": {"Memory": 1e30}},
     "json: cannot unmarshal number 1e+30 into Go struct field HostConfig.HostConfig.Memory "
     "of type int64"),
    ({"Image": "busybox", "Cmd": {"a": 1}},
     "json: cannot unmarshal object into Go struct field CreateRequest.Cmd of type "
     "strslice.StrSlice"),
    ({"Image": "busybox", "HostConfig": {"Memory": -5}}, "Minimum memory limit allowed is 6MB"),
])
def test_create_with_wrong_types(api: httpx.Client, busybox: str, body: dict,
                                 expected: str) -> None:
    response = api.post("/containers/create", json=body)
    assert response.status_code == 400 and message(response) == expected


def test_deeply_nested_json(api: httpx.Client) -> None:
    response = api.post("/containers/create", content=NESTED,
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert message(response) == "invalid JSON: JSON nested too deeply"


def test_update_with_a_list_restart_policy(api: httpx.Client, container: str) -> None:
    response = api.post(f"/containers/{container}/update",
                        json={"RestartPolicy": [None, None]})
    assert response.status_code == 400
    assert message(response) == (
        "json: cannot unmarshal array into Go struct field UpdateConfig.RestartPolicy of type "
        "container.RestartPolicy")


def test_out_of_range_query_integers(api: httpx.Client, container: str) -> None:
    response = api.post(f"/containers/{container}/resize", params={"h": "24", "w": "-1"})
    assert response.status_code == 400
    assert message(response) == 'invalid resize width "-1": value out of range'
    response = api.post(f"/containers/{container}/stop", params={"t": "99999999999999999999"})
    assert response.status_code == 400
    assert message(response) == 'invalid value for t "99999999999999999999": value out of range'
    response = api.get("/containers/json", params={"filters": '{"status": 5}'})
    assert response.status_code == 400
    assert message(response) == "invalid filter 'status': expected a list of strings"


@pytest.mark.parametrize("path, go_type", [
    ("/networks/create", "network.CreateRequest"),
    ("/networks/bridge/connect", "network.ConnectOptions"),
    ("/networks/bridge/disconnect", "network.DisconnectOptions"),
    ("/auth", "registry.AuthConfig"),
    ("/exec/0123456789ab/start", "container.ExecStartOptions"),
    ("/volumes/create", "volume.CreateOptions"),
])
def test_list_bodies(api: httpx.Client, path: str, go_type: str) -> None:
    response = api.post(path, json=[1, 2])
    assert response.status_code == 400
    assert message(response) == f"json: cannot unmarshal array into Go value of type {go_type}"


def test_network_names_follow_docker(api: httpx.Client) -> None:
    response = api.post("/networks/create", json={"Name": "bad name"})
    assert response.status_code == 400
    assert message(response) == ('invalid network name "bad name": only '
                                 "[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def test_load_of_a_file_that_is_not_a_tar(engine: Engine) -> None:
    result = engine.docker("load", input=b"this is not a tar archive\n" * 100, check=False)
    assert result.returncode == 1
    assert result.stderr == b"Error response from daemon: archive/tar: invalid tar header\n"


def test_seventy_megabytes_of_labels(api: httpx.Client) -> None:
    labels = {f"label{i}": "x" * 1000 for i in range(70_000)}
    response = api.post("/containers/create", json={"Image": "busybox", "Labels": labels})
    assert response.status_code == 413
    assert message(response) == "request body too large: JSON bodies are limited to 4 MiB"


def send_chunked(engine: Engine, path: str, total: int, piece: bytes) -> bytes:
    """POST `total` bytes in HTTP chunks over the unix socket (no length
    announced, so the gateway has to count); returns the raw answer."""
    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(engine.socket))
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json"
                     "\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            sock.sendall(chunk(b'{"Image": "busybox", "Labels": {"a": "'))
            framed = chunk(piece)
            for _ in range(total // len(piece)):
                sock.sendall(framed)
            sock.sendall(chunk(b'"}}') + b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed before the end
        answer = b""
        while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
            answer += data
        return answer


def test_huge_json_body_is_refused_without_being_held(engine: Engine) -> None:
    pid = gateway_status(engine)["pid"]
    before = rss_bytes(pid)
    answer = send_chunked(engine, "/v1.50/containers/create", 300 * MiB, b"y" * MiB)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    growth = rss_bytes(pid) - before
    assert growth < 100 * MiB, f"gateway grew by {growth >> 20} MiB"


def open_and_close(engine: Engine, path: str) -> bytes:
    """Start a streaming GET, read its headers, and go away."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(engine.socket))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head and (data := sock.recv(4096)):
            head += data
        return head


@pytest.mark.parametrize("route, path", [
    ("/events", "/v1.50/events"),
    ("/containers/{id}/logs", "/v1.50/containers/target/logs?follow=1&stdout=1"),
    ("/containers/{id}/stats", "/v1.50/containers/target/stats"),
])
def test_client_leaving_a_stream_is_no_error(engine: Engine, container: str, route: str,
                                             path: str) -> None:
    before = http_counts(engine, route)
    head = open_and_close(engine, path)
    assert head.startswith(b"HTTP/1.1 200 "), head
    wait_for(lambda: sum(http_counts(engine, route).values()) > sum(before.values()),
             message=f"{route} to end after its client left")
    after = http_counts(engine, route)
    assert after.get("500", 0) == before.get("500", 0)
    assert after.get("200", 0) == before.get("200", 0) + 1
    assert "Traceback" not in engine.logs()
