"""The programmatic client of docs/grpc-clients.md, run as a user would run it:
pull from a registry, create, start, follow logs and wait, over gRPC alone."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.engine import REPO, Engine
from tests.support.registry import Registry, skopeo_copy

EXAMPLE = REPO / "docs" / "examples" / "run_container.py"


@pytest.fixture(scope="module")
def seeded(registry: Registry, busybox_tar: Path) -> str:
    name = f"{registry.address}/example/busybox:1"
    skopeo_copy(f"docker-archive:{busybox_tar}", f"docker://{name}")
    return name


def test_example_runs_a_container_without_the_gateway(engine: Engine, seeded: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--exec-root", str(engine.exec_root), seeded,
         "sh", "-c", "echo out; echo err >&2; exit 3"],
        capture_output=True, timeout=120)
    assert result.returncode == 3, result.stderr.decode()
    assert result.stdout == b"out\n"
    assert b"err\n" in result.stderr
    assert b"Pull complete" in result.stderr or b"Download complete" in result.stderr
    assert engine.docker("ps", "-aq").stdout.strip() == b""


def test_reflection_lists_the_service(engine: Engine) -> None:
    with grpc.insecure_channel(f"unix://{engine.exec_root}/container.sock") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(stub.ServerReflectionInfo(iter([request])))
    names = {service.name for service in answer.list_services_response.service}
    assert "berth.container.v1.ContainerService" in names
    assert "grpc.health.v1.Health" in names


def test_wheel_ships_the_stubs_under_berth(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel, = tmp_path.glob("berth-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in ("container", "image", "network", "volume", "build"):
        assert f"berth/{service}/v1/{service}_pb2_grpc.py" in names
