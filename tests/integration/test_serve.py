"""Issue 2: `berth serve` on its own — mutual TLS, SIGTERM, a service that is down."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.container.v1 import container_pb2, container_pb2_grpc
from berth.types.v1 import types_pb2, types_pb2_grpc
from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from tests.support.engine import BERTH, DOCKER_CLI, REPO
from tests.support.registry import free_port
from tests.support.tls import Certs, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


def serve(service: str, root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*BERTH, "serve", service, "--data-root", str(root / "data"),
         "--exec-root", str(root / "run"), *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_serving(channel: grpc.Channel, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@pytest.fixture
def stopped_on_exit() -> Iterator[list[subprocess.Popen]]:
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigterm_exits_zero(tmp_path: Path, stopped_on_exit: list) -> None:
    process = serve("volume", tmp_path)
    stopped_on_exit.append(process)
    with grpc.insecure_channel(f"unix://{tmp_path}/run/volume.sock") as channel:
        wait_serving(channel)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0


def test_tcp_requires_client_certificate(tmp_path: Path, certs: Certs,
                                         stopped_on_exit: list) -> None:
    port = free_port()
    process = serve("volume", tmp_path, "--listen", f"tcp://127.0.0.1:{port}",
                    "--tls-ca", str(certs.ca), "--tls-cert", str(certs.cert),
                    "--tls-key", str(certs.key))
    stopped_on_exit.append(process)
    creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), certs.key.read_bytes(),
                                         certs.cert.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        wait_serving(channel)
    anonymous = grpc.ssl_channel_credentials(certs.ca.read_bytes())
    with (grpc.secure_channel(f"127.0.0.1:{port}", anonymous) as channel,
          pytest.raises(grpc.RpcError)):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)


def test_docker_cli_over_tls(tmp_path: Path, certs: Certs, stopped_on_exit: list) -> None:
    port = free_port()
    gateway = serve("gateway", tmp_path, "--tcp", f"127.0.0.1:{port}",
                    "--tlscacert", str(certs.ca), "--tlscert", str(certs.cert),
                    "--tlskey", str(certs.key))
    stopped_on_exit.append(gateway)
    with grpc.insecure_channel(f"unix://{tmp_path}/run/gateway.sock") as channel:
        wait_serving(channel)
    tls = ["--tlsverify", "--tlscacert", str(certs.ca), "--tlscert", str(certs.cert),
           "--tlskey", str(certs.key), "-H", f"tcp://127.0.0.1:{port}"]
    ok = subprocess.run([DOCKER_CLI, *tls, "version", "--format", "{{.Server.Platform.Name}}"],
                        capture_output=True, text=True, timeout=30)
    assert ok.stdout.strip() == "berth", ok.stderr
    no_cert = subprocess.run([DOCKER_CLI, "--tlsverify", "--tlscacert", str(certs.ca), "-H",
                              f"tcp://127.0.0.1:{port}", "version"],
                             capture_output=True, text=True, timeout=30)
    assert no_cert.returncode != 0
def test_gateway_answers_503_when_a_service_is_down(tmp_path: Path,
                                                    stopped_on_exit: list) -> None:
    gateway = serve("gateway", tmp_path)
    stopped_on_exit.append(gateway)
    with grpc.insecure_channel(f"unix://{tmp_path}/run/gateway.sock") as channel:
        wait_serving(channel)
    started = time.monotonic()
    result = subprocess.run(
        ["curl", "-sS", "--unix-socket", str(tmp_path / "run" / "docker.sock"),
         "-w", "%{http_code}", "http://berth/v1.50/volumes"],
        capture_output=True, text=True, timeout=10)
    assert time.monotonic() - started < 2
    assert result.stdout == '{"message": "volume service unavailable"}503'


def test_grpc_invalid_argument_names_the_field(tmp_path: Path, stopped_on_exit: list) -> None:
    process = serve("volume", tmp_path)
    stopped_on_exit.append(process)
    with grpc.insecure_channel(f"unix://{tmp_path}/run/volume.sock") as channel:
        wait_serving(channel)
        stub = volume_pb2_grpc.VolumeServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Inspect(volume_pb2.InspectVolumeRequest(name=""), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in error.value.details()


def test_sighup_reloads_a_lone_service(tmp_path: Path, stopped_on_exit: list) -> None:
    """`berth serve` alone reads its config file again on SIGHUP: the container
    service reports the new settings and sends the daemon reload event. An
    invalid file (here over the EngineConfig.Reload RPC `berth up` uses) is
    refused and changes nothing."""
    config = tmp_path / "engine.json"
    config.write_text('{"labels": ["stage=one"]}')
    process = serve("container", tmp_path, "--config", str(config))
    stopped_on_exit.append(process)
    with grpc.insecure_channel(f"unix://{tmp_path}/run/container.sock") as channel:
        wait_serving(channel)
        containers = container_pb2_grpc.ContainerServiceStub(channel)
        since = time.time_ns()
        config.write_text('{"labels": ["stage=two"], "debug": true}')
        process.send_signal(signal.SIGHUP)
        daemon_only = types_pb2.Filters(filters={"type": types_pb2.StringList(values=["daemon"])})
        events = containers.Subscribe(
            types_pb2.SubscribeRequest(since_nano=since, filters=daemon_only), timeout=60)
        event = next(events)
        events.cancel()
        assert (event.type, event.action) == ("daemon", "reload")
        assert event.attributes["labels"] == '["stage=two"]'

        config.write_text('{"labels": ["stage=three"], "debug": "yes"}')
        with pytest.raises(grpc.RpcError) as refused:
            types_pb2_grpc.EngineConfigStub(channel).Reload(
                types_pb2.ReloadEngineConfigRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid value for debug" in refused.value.details()
        host = containers.Info(container_pb2.HostInfoRequest(), timeout=10)
        assert (list(host.labels), host.debug) == (["stage=two"], True)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
