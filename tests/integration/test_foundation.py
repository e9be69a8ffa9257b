"""Issue 2: the engine frame — berth up, status, gateway basics, metrics, health."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine import BERTH, REPO, Engine

SERVICES = ("image", "volume", "network", "container", "build", "cri", "gateway")


def curl(engine: Engine, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--unix-socket", str(engine.socket), *args],
                          capture_output=True, text=True, timeout=10)


def status(engine: Engine) -> list[dict]:
    out = subprocess.run([*BERTH, "status", "--exec-root", str(engine.exec_root), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


def test_docker_version_names_berth(engine: Engine) -> None:
    out = engine.docker("version", "--format", "{{json .Server}}").stdout
    server = json.loads(out)
    assert server["Platform"]["Name"] == "berth"
    assert server["ApiVersion"] == "1.50"
    assert server["MinAPIVersion"] == "1.24"
    assert any(c["Name"] == "berth" for c in server["Components"])


def test_docker_info_reports_real_figures(engine: Engine) -> None:
    result = engine.docker("info", "--format", "{{json .}}")
    assert b"ERROR" not in result.stderr
    info = json.loads(result.stdout)
    assert info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0
    assert info["Driver"] == "overlay2"
    assert info["DefaultRuntime"] == "runc"
    assert info["DockerRootDir"] == str(engine.data_root)
    assert info["CgroupVersion"] in ("1", "2")


def test_sdk_version(engine: Engine) -> None:
    assert engine.client().version()["ApiVersion"] == "1.50"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_ping_headers(engine: Engine, method: str) -> None:
    flags = ["-I"] if method == "HEAD" else ["-i"]
    result = curl(engine, *flags, "http://berth/_ping")
    head = result.stdout.lower()
    assert "200 ok" in head
    for header in ("api-version: 1.50", "ostype: linux", "docker-experimental: false",
                   "builder-version:", "cache-control: no-cache", "pragma: no-cache"):
        assert header in head


@pytest.mark.parametrize("prefix", ["", "/v1.24", "/v1.41", "/v1.50"])
def test_every_version_prefix_routes(engine: Engine, prefix: str) -> None:
    assert curl(engine, f"http://berth{prefix}/_ping").stdout == "OK"


def test_too_new_version_is_refused(engine: Engine) -> None:
    result = curl(engine, "-w", "%{http_code}", "http://berth/v1.51/version")
    assert result.stdout.endswith("400")
    assert "client version 1.51 is too new" in result.stdout


def test_unknown_path_is_404(engine: Engine) -> None:
    result = curl(engine, "-w", "%{http_code}", "http://berth/v1.50/nothing/here")
    assert result.stdout == '{"message": "page not found"}404'


def test_docker_socket_mode(engine: Engine) -> None:
    assert engine.socket.stat().st_mode & 0o777 == 0o660


def test_status_lists_every_service_serving(engine: Engine) -> None:
    rows = {row["service"]: row for row in status(engine)}
    assert set(rows) == set(SERVICES)
    for row in rows.values():
        assert row["health"] == "SERVING"
        assert row["metrics_url"].startswith("http://127.0.0.1:")
        assert row["uptime_seconds"] >= 0


def test_metrics_parse_for_every_process(engine: Engine) -> None:
    engine.docker("version")
    for row in status(engine):
        text = urllib.request.urlopen(row["metrics_url"], timeout=5).read().decode()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert "grpc_server_started" in names or "grpc_server_started_total" in names
        assert "grpc_server_handling_seconds" in names
        assert "process_resident_memory_bytes" in names
        if row["service"] == "gateway":
            assert "berth_http_requests" in names


def test_health_and_reflection_on_every_service(engine: Engine) -> None:
    for service in SERVICES:
        with grpc.insecure_channel(f"unix://{engine.exec_root}/{service}.sock") as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                         timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            response = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
            names = {s.name for s in response.list_services_response.service}
            assert "grpc.health.v1.Health" in names
            assert "berth.types.v1.Info" in names
            if service == "cri":
                assert {"runtime.v1.RuntimeService", "runtime.v1.ImageService"} <= names
            elif service != "gateway":
                assert f"berth.{service}.v1.{service.capitalize()}Service" in names


def test_second_up_on_same_exec_root_refuses(engine: Engine) -> None:
    result = subprocess.run([*BERTH, "up", "--data-root", str(engine.data_root),
                             "--exec-root", str(engine.exec_root)],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "already running" in result.stderr


def test_killed_service_is_restarted_within_3s(engine: Engine) -> None:
    before = {row["service"]: row for row in status(engine)}
    os.kill(before["volume"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        rows = {row["service"]: row for row in status(engine)}
        if rows["volume"]["health"] == "SERVING" and rows["volume"]["pid"] != before[
                "volume"]["pid"]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("volume service not SERVING again within 3s")
    assert "volume service exited" in engine.logs()
