"""Pure logic behind docker diff/commit/top/stats/update/healthchecks."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from berth.container.v1 import container_pb2
from services.common import whiteouts
from services.common.errors import InvalidArgument
from services.common.godur import parse_ns
from services.container import health, stats, top, update, upperdir
from services.container.commit_instructions import apply_changes


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for path in ("bin/sh", "bin/arch", "etc/passwd", "opt/old/a"):
        (lower / path).parent.mkdir(parents=True, exist_ok=True)
        (lower / path).write_text("lower")
    (upper / "bin").mkdir(parents=True)
    os.mknod(upper / "bin" / "arch", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (upper / "etc").mkdir()
    (upper / "etc" / "passwd").write_text("changed")
    (upper / "etc" / "hosts").write_text("engine file")
    (upper / "new").mkdir()
    (upper / "new" / "file").write_text("added")
    (upper / "opt").mkdir()
    (upper / "opt" / "old").mkdir()
    os.setxattr(upper / "opt" / "old", whiteouts.OPAQUE_XATTR, b"y")
    return lower, upper


def test_changes_of_an_upperdir(layers: tuple[Path, Path]) -> None:
    lower, upper = layers
    found = [(c.path, c.kind) for c in upperdir.changes(str(upper), [str(lower)])]
    assert found == [("/bin", 0), ("/bin/arch", 2), ("/etc", 0), ("/etc/passwd", 0),
                     ("/new", 1), ("/new/file", 1), ("/opt", 0), ("/opt/old", 0)]


def test_layer_tar_carries_whiteouts(layers: tuple[Path, Path]) -> None:
    _, upper = layers
    chunks: list[bytes] = []
    upperdir.write_layer_tar(str(upper), chunks.append)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        names = tar.getnames()
    assert "bin/.wh.arch" in names and "opt/old/.wh..wh..opq" in names
    assert "new/file" in names and "etc/passwd" in names and "etc/hosts" not in names


def test_commit_changes() -> None:
    config = container_pb2.ContainerConfig(env=["A=0"])
    apply_changes(config, ['CMD ["a", "b"]', "ENV A=1 B=\"2 3\"", "EXPOSE 80 53/udp",
                           "LABEL k=v", "USER app", "WORKDIR /w", "ENTRYPOINT run me",
                           "HEALTHCHECK --interval=5s --retries=2 CMD true", "VOLUME /v"])
    assert list(config.cmd.values) == ["a", "b"]
    assert list(config.entrypoint.values) == ["/bin/sh", "-c", "run me"]
    assert set(config.env) == {"A=1", "B=2 3"}
    assert list(config.exposed_ports) == ["80/tcp", "53/udp"]
    assert config.user == "app" and config.working_dir == "/w" and config.labels["k"] == "v"
    assert list(config.healthcheck.test.values) == ["CMD-SHELL", "true"]
    assert config.healthcheck.interval_ns == 5_000_000_000 and config.healthcheck.retries == 2
    with pytest.raises(InvalidArgument, match="run is not a valid change command"):
        apply_changes(config, ["RUN true"])
    assert parse_ns("1m30s") == 90_000_000_000
    with pytest.raises(InvalidArgument):
        parse_ns("soon")


def test_ps_output_is_filtered_to_the_container() -> None:
    output = ("UID PID PPID CMD\nroot 10 1 sleep 100\nroot 11 1 other thing\n"
              "root 12 10 sh -c echo hi\n")
    table = top.parse_ps_output(output, {10, 12})
    assert table.titles == ["UID", "PID", "PPID", "CMD"]
    assert table.processes == [["root", "10", "1", "sleep 100"],
                               ["root", "12", "10", "sh -c echo hi"]]
    with pytest.raises(Exception, match="Couldn't find PID field"):
        top.parse_ps_output("A B\n1 2\n", {1})


def test_net_dev_and_system_cpu() -> None:
    text = ("Inter-|   Receive | Transmit\n face |bytes packets errs drop fifo frame "
            "compressed multicast|bytes packets errs drop fifo colls carrier compressed\n"
            "    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n"
            "  eth0: 500 5 1 2 0 0 0 0 700 7 3 4 0 0 0 0\n")
    assert stats.parse_net_dev(text) == {"eth0": {
        "rx_bytes": 500, "rx_packets": 5, "rx_errors": 1, "rx_dropped": 2,
        "tx_bytes": 700, "tx_packets": 7, "tx_errors": 3, "tx_dropped": 4}}
    ticks = 100 * stats.CLOCK_TICKS
    assert stats.system_cpu_nanos(f"cpu  {ticks} 0 0 0 0 0 0 0 0 0\n") == 100 * 10**9


def test_update_merges_and_builds_runc_flags() -> None:
    host = container_pb2.HostConfig()
    request = container_pb2.UpdateContainerRequest(resources=container_pb2.Resources(
        memory=64 << 20, nano_cpus=500_000_000, cpu_shares=512, pids_limit=10))
    merged = update.merge(host, request)
    assert merged.resources.memory_swap == 128 << 20
    flags = update.runc_update_args(request.resources, merged.resources)
    assert flags == ["--memory", str(64 << 20), "--memory-swap", str(128 << 20),
                     "--cpu-share", "512", "--cpu-period", "100000", "--cpu-quota", "50000",
                     "--pids-limit", "10"]
    limited = container_pb2.HostConfig(resources=container_pb2.Resources(
        memory=64 << 20, memory_swap=100 << 20))
    with pytest.raises(InvalidArgument, match="memoryswap"):
        update.merge(limited, container_pb2.UpdateContainerRequest(
            resources=container_pb2.Resources(memory=200 << 20)))


def test_health_state_machine() -> None:
    state = health.new_health()

    def probe(code: int) -> health.ProbeResult:
        return health.ProbeResult(exit_code=code, output="", start="s", end="e")

    assert not health.record(state, probe(1), retries=2, in_start_period=True)
    assert state["status"] == "starting" and state["failing_streak"] == 0
    assert not health.record(state, probe(1), retries=2, in_start_period=False)
    assert health.record(state, probe(1), retries=2, in_start_period=False)
    assert state["status"] == "unhealthy"
    assert health.record(state, probe(0), retries=2, in_start_period=False)
    assert state["status"] == "healthy" and state["failing_streak"] == 0
    for _ in range(6):
        health.record(state, probe(0), retries=2, in_start_period=False)
    assert len(state["log"]) == health.MAX_LOG_ENTRIES
    assert health.status_suffix(state) == " (healthy)"
    assert health.status_suffix(health.new_health()) == " (health: starting)"
