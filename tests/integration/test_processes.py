"""Issue 12: one set of services whatever dies, and socket modes that do not
depend on the umask. The module's engine is started with umask 000."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.types.v1 import types_pb2, types_pb2_grpc
from services.common.config import SERVICES
from tests.support.engine import BERTH, REPO, Engine, running_engine
from tests.support.polling import wait_for


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(umask=0o000) as running:
        yield running


def serve(service: str, data_root: Path, exec_root: Path, *extra: str) -> list[str]:
    return [*BERTH, "serve", service, "--data-root", str(data_root),
            "--exec-root", str(exec_root), *extra]


def service_processes(engine: Engine) -> dict[str, list[int]]:
    """PIDs of the `berth serve` processes on this engine's exec root, by service."""
    found: dict[str, list[int]] = {name: [] for name in SERVICES}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # exited meanwhile
        if ("serve" in argv and "--exec-root" in argv
                and argv[argv.index("--exec-root") + 1] == str(engine.exec_root)):
            found[argv[argv.index("serve") + 1]].append(int(entry.name))
    return found


def service_pid(engine: Engine, service: str) -> int:
    """PID the service reports over its socket; also proves it answers."""
    with grpc.insecure_channel(f"unix://{engine.exec_root}/{service}.sock") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        info = types_pb2_grpc.InfoStub(channel).GetServiceInfo(
            types_pb2.GetServiceInfoRequest(), timeout=5)
    return info.pid


def umask_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))


def test_modes_do_not_follow_the_umask(engine: Engine) -> None:
    root = engine.exec_root.stat()
    assert (stat.S_IMODE(root.st_mode), root.st_uid) == (0o700, 0)
    sockets = [engine.exec_root / f"{name}.sock" for name in SERVICES] + [engine.socket]
    for path in sockets:
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode), path
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o660, 0), path
    for path in (engine.data_root, engine.data_root / "image", engine.exec_root / "container"):
        assert not path.stat().st_mode & stat.S_IWOTH, path


def test_engine_processes_run_with_umask_022(engine: Engine) -> None:
    assert engine.process is not None
    pids = [engine.process.pid, *(service_pid(engine, name) for name in SERVICES)]
    assert {umask_of(pid) for pid in pids} == {"0022"}


@pytest.mark.parametrize("service", SERVICES)
def test_second_copy_of_a_service_refuses(engine: Engine, service: str) -> None:
    serving = service_pid(engine, service)
    result = subprocess.run(serve(service, engine.data_root, engine.exec_root), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    socket_path = engine.exec_root / f"{service}.sock"
    assert (f"{service} service already serving on unix://{socket_path} (pid {serving})"
            in result.stderr)
    assert service_pid(engine, service) == serving
    if service == "gateway":
        engine.docker("version")


def test_live_socket_of_another_exec_root_is_kept(engine: Engine, tmp_path: Path) -> None:
    serving = service_pid(engine, "volume")
    socket_path = engine.exec_root / "volume.sock"
    result = subprocess.run(
        serve("volume", tmp_path / "data", tmp_path / "run", "--listen", f"unix://{socket_path}"),
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"volume service already serving on {socket_path}" in result.stderr
    assert service_pid(engine, "volume") == serving


def serves(path: Path) -> bool:
    with grpc.insecure_channel(f"unix://{path}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                              timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    exec_root = tmp_path / "run"
    exec_root.mkdir()
    stale = exec_root / "volume.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))
    process = subprocess.Popen(serve("volume", tmp_path / "data", exec_root), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: process.poll() is not None or serves(stale), timeout=30,
                 message="volume service serving on the stale socket's path")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_service_whose_supervisor_is_gone_does_not_start(tmp_path: Path) -> None:
    """The supervisor died before the child's prctl: its parent is no longer it."""
    result = subprocess.run(
        serve("volume", tmp_path / "data", tmp_path / "run", "--supervisor-pid", "1"),
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "the supervisor (pid 1) is gone" in result.stderr
    assert not (tmp_path / "run" / "volume.sock").exists()


def inspect(engine: Engine, cid: str) -> dict:
    return json.loads(engine.docker("inspect", cid).stdout)[0]


def test_killed_supervisor_leaves_one_set_of_services(engine: Engine, busybox: str) -> None:
    cid = engine.docker("run", "-d", "--restart", "always", busybox,
                        "sleep", "1000").stdout.decode().strip()
    first_set = service_processes(engine)
    assert all(len(pids) == 1 for pids in first_set.values()), first_set
    assert engine.process is not None
    engine.process.kill()  # SIGKILL to the supervisor's PID alone
    engine.process.wait()

    engine.start()
    second_set = service_processes(engine)
    assert all(len(pids) == 1 for pids in second_set.values()), second_set
    assert not {pid for pids in first_set.values() for pid in pids} & {
        pid for pids in second_set.values() for pid in pids}
    logs = engine.logs()
    for name in SERVICES:  # the first set stopped gracefully on its own
        assert f"{name} service stopped in" in logs, name

    state = inspect(engine, cid)["State"]
    assert state["Status"] == "running" and inspect(engine, cid)["RestartCount"] == 0
    os.kill(state["Pid"], signal.SIGKILL)

    def restarted() -> bool:
        now = inspect(engine, cid)["State"]  # Running stays true while restarting
        return now["Status"] == "running" and now["Pid"] != state["Pid"]
    wait_for(restarted, timeout=30, message="the container restarted")
    assert inspect(engine, cid)["RestartCount"] == 1
