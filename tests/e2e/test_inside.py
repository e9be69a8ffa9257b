"""top, stats, diff, export, update, commit and healthchecks end to end with
the real docker CLI and the SDK."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import docker
import pytest

from tests.support.engine import Engine
from tests.support.polling import wait_for

CGROUP = Path("/sys/fs/cgroup")


def out(result) -> str:
    return result.stdout.decode().strip()


def container_id(engine: Engine, name: str) -> str:
    return out(engine.docker("inspect", "-f", "{{.Id}}", name))


def cgroup_file(cid: str, controller: str, name: str) -> str:
    """A v1 controller file of the container's cgroup, wherever its parent is."""
    matches = list((CGROUP / controller).glob(f"*/{cid}/{name}"))
    assert matches, f"no {controller} cgroup for {cid}"
    return matches[0].read_text().strip()


@pytest.fixture(scope="module")
def box(engine: Engine, busybox: str):
    name = "inside-box"
    engine.docker("run", "-d", "--network", "none", "--name", name, "-m", "64m", busybox,
                  "sh", "-c", "while true; do sleep 1; done")
    yield name
    engine.docker("rm", "-f", name, check=False)


def test_top_lists_the_container_processes(engine: Engine, box: str) -> None:
    lines = out(engine.docker("top", box)).splitlines()
    assert lines[0].split()[:3] == ["UID", "PID", "PPID"]
    assert any("while true" in line for line in lines[1:])
    custom = out(engine.docker("top", box, "-o", "pid,comm")).splitlines()
    assert custom[0].split() == ["PID", "COMMAND"] and any("sh" in c for c in custom[1:])
    top = engine.client().api.top(box, ps_args="aux")
    assert "PID" in top["Titles"] and top["Processes"]
    engine.docker("create", "--network", "none", "--name", "top-stopped", "busybox", "true")
    stopped = engine.docker("top", "top-stopped", check=False)
    assert stopped.returncode != 0 and "is not running" in stopped.stderr.decode()
    engine.docker("rm", "top-stopped")


def test_stats_report_cpu_memory_and_pids(engine: Engine, box: str) -> None:
    line = out(engine.docker("stats", "--no-stream", "--format", "{{json .}}", box))
    row = json.loads(line)
    assert row["Name"] == box
    assert row["MemUsage"].endswith("/ 64MiB")
    assert int(row["PIDs"]) >= 1
    assert row["CPUPerc"].endswith("%")
    sample = engine.client().api.stats(box, stream=False)
    assert sample["memory_stats"]["limit"] == 64 << 20
    assert sample["cpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert sample["precpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert sample["cpu_stats"]["online_cpus"] >= 1
    assert sample["pids_stats"]["current"] >= 1
    one_shot = engine.client().api.stats(box, stream=False, one_shot=True)
    assert one_shot["name"] == f"/{box}" and one_shot["memory_stats"]["usage"] > 0
    stream = engine.client().api.stats(box, decode=True)
    first, second = next(stream), next(stream)
    assert second["preread"] == first["read"]


def test_stats_of_a_busy_networked_container(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "stats-net", busybox, "sh", "-c",
                  "while true; do :; done")
    try:
        sample = engine.client().api.stats("stats-net", stream=False)
        assert "eth0" in sample["networks"]
        assert set(sample["networks"]["eth0"]) >= {"rx_bytes", "tx_bytes", "rx_packets"}
        row = json.loads(out(engine.docker("stats", "--no-stream", "--format", "{{json .}}",
                                           "stats-net")))
        assert float(row["CPUPerc"].rstrip("%")) > 10
        assert row["NetIO"] != "--"
    finally:
        engine.docker("rm", "-f", "stats-net")


def test_diff_and_export(engine: Engine, busybox: str, tmp_path: Path) -> None:
    engine.docker("run", "--network", "none", "--name", "diffed", busybox, "sh", "-c",
                  "mkdir /new && echo hi > /new/file && rm /bin/arch && echo x >> /etc/passwd")
    try:
        changes = out(engine.docker("diff", "diffed")).splitlines()
        assert changes == ["C /bin", "D /bin/arch", "C /etc", "C /etc/passwd", "A /new",
                           "A /new/file"]
        exported = engine.docker("export", "diffed").stdout
        with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
            names = set(tar.getnames())
            assert tar.extractfile("new/file").read() == b"hi\n"
        assert "bin/busybox" in names and "bin/arch" not in names
        engine.docker("export", "-o", str(tmp_path / "out.tar"), "diffed")
        assert (tmp_path / "out.tar").stat().st_size == len(exported)
    finally:
        engine.docker("rm", "diffed")


def test_update_changes_the_cgroup(engine: Engine, box: str) -> None:
    cid = container_id(engine, box)
    engine.docker("update", "--memory", "96m", "--memory-swap", "192m", "--cpus", "0.5",
                  "--cpu-shares", "512", "--pids-limit", "77", "--cpuset-cpus", "0", box)
    assert cgroup_file(cid, "cpuset", "cpuset.cpus") == "0"
    assert cgroup_file(cid, "memory", "memory.limit_in_bytes") == str(96 << 20)
    assert cgroup_file(cid, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(cid, "cpu", "cpu.shares") == "512"
    assert cgroup_file(cid, "pids", "pids.max") == "77"
    host = engine.client().api.inspect_container(box)["HostConfig"]
    assert host["Memory"] == 96 << 20 and host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 77
    reply = engine.client().api.update_container(box, restart_policy={"Name": "always"})
    assert reply == {"Warnings": None}
    assert engine.client().api.inspect_container(box)["HostConfig"]["RestartPolicy"][
        "Name"] == "always"
    bad = engine.docker("update", "--memory", "1m", box, check=False)
    assert bad.returncode != 0 and "Minimum memory limit allowed is 6MB" in bad.stderr.decode()


def post_update(engine: Engine, ref: str, body: dict) -> dict:
    api = engine.client().api
    return api._result(api._post_json(api._url("/containers/{0}/update", ref), data=body), True)


def test_update_applies_or_refuses_every_field(engine: Engine, box: str,
                                               busybox: str) -> None:
    cid = container_id(engine, box)
    post_update(engine, box, {"MemorySwappiness": 10, "OomKillDisable": True,
                              "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}]})
    assert cgroup_file(cid, "memory", "memory.swappiness") == "10"
    assert "oom_kill_disable 1" in cgroup_file(cid, "memory", "memory.oom_control")
    limits = out(engine.docker("exec", box, "grep", "open files", "/proc/1/limits")).split()
    assert limits[3:5] == ["512", "1024"]
    host = engine.client().api.inspect_container(box)["HostConfig"]
    assert host["MemorySwappiness"] == 10 and host["OomKillDisable"] is True
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 512, "Hard": 1024}]

    device = {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/extra-zero",
              "CgroupPermissions": "rwm"}
    with pytest.raises(docker.errors.APIError) as running:
        post_update(engine, box, {"Devices": [device]})
    assert running.value.status_code == 409
    assert "devices cannot be changed while the container is running" in str(running.value)
    with pytest.raises(docker.errors.APIError) as realtime:
        post_update(engine, box, {"CpuRealtimePeriod": 1000, "CpuRealtimeRuntime": 2000})
    assert realtime.value.status_code == 400
    assert "cpu-rt-runtime cannot be higher than cpu-rt-period" in str(realtime.value)

    engine.docker("create", "--name", "later-devices", busybox, "ls", "/dev/extra-zero")
    try:
        post_update(engine, "later-devices", {"Devices": [device],
                                              "CpuRealtimePeriod": 1_000_000})
        host = engine.client().api.inspect_container("later-devices")["HostConfig"]
        assert host["Devices"] == [device] and host["CpuRealtimePeriod"] == 1_000_000
        engine.docker("start", "-a", "later-devices")
        assert out(engine.docker("logs", "later-devices")) == "/dev/extra-zero"
    finally:
        engine.docker("rm", "-f", "later-devices")


def test_commit_makes_an_image(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--network", "none", "--name", "to-commit", busybox, "sh", "-c",
                  "echo committed > /hello && rm /bin/arch")
    try:
        image_id = out(engine.docker(
            "commit", "-c", "ENV GREETING=hi", "-c", 'CMD ["cat", "/hello"]', "-m", "a message",
            "-a", "me", "to-commit", "committed:v1"))
        assert image_id.startswith("sha256:")
        assert out(engine.docker("run", "--rm", "--network", "none", "committed:v1")) == (
            "committed")
        gone = engine.docker("run", "--rm", "--network", "none", "committed:v1", "ls",
                             "/bin/arch", check=False)
        assert gone.returncode != 0
        config = engine.client().api.inspect_image("committed:v1")
        assert "GREETING=hi" in config["Config"]["Env"]
        assert config["Config"]["Cmd"] == ["cat", "/hello"]
        assert config["Comment"] == "a message" and config["Author"] == "me"
        bad = engine.docker("commit", "-c", "RUN true", "to-commit", check=False)
        assert bad.returncode != 0 and "not a valid change command" in bad.stderr.decode()
    finally:
        engine.docker("rm", "to-commit")
        engine.docker("rmi", "committed:v1", check=False)
    with pytest.raises(docker.errors.NotFound):
        engine.client().api.commit("no-such-container", repository="x")


def test_healthcheck_states_and_events(engine: Engine, busybox: str) -> None:
    since = str(time.time() - 1)
    engine.docker("run", "-d", "--network", "none", "--name", "healthy-box",
                  "--health-cmd", "test -f /tmp/ok", "--health-interval", "300ms",
                  "--health-retries", "2", busybox, "sleep", "1000")
    try:
        assert "(health: starting)" in out(engine.docker("ps", "--filter", "name=healthy-box"))

        def health() -> dict:
            return engine.client().api.inspect_container("healthy-box")["State"]["Health"]

        wait_for(lambda: health()["Status"] == "unhealthy", message="unhealthy")
        assert health()["FailingStreak"] >= 2 and health()["Log"][-1]["ExitCode"] == 1
        engine.docker("exec", "healthy-box", "touch", "/tmp/ok")
        wait_for(lambda: health()["Status"] == "healthy", message="healthy")
        assert len(health()["Log"]) <= 5
        assert "(healthy)" in out(engine.docker("ps", "--filter", "health=healthy"))
        assert "healthy-box" not in out(engine.docker("ps", "--filter", "health=none"))
        events = out(engine.docker(
            "events", "--since", since, "--until", str(time.time() + 1), "--format",
            "{{.Action}}", "--filter", "event=health_status"))
        assert "health_status: unhealthy" in events and "health_status: healthy" in events
        probes = out(engine.docker(
            "events", "--since", since, "--until", str(time.time() + 1), "--format",
            "{{.Action}}", "--filter", "container=healthy-box", "--filter", "event=exec_die"))
        assert probes.count("exec_die") >= 3
        engine.docker("pause", "healthy-box")
        time.sleep(1.2)
        assert health()["Status"] == "healthy"
        engine.docker("unpause", "healthy-box")
        engine.docker("stop", "-t", "0", "healthy-box")
        wait_for(lambda: health()["Status"] == "unhealthy", message="unhealthy once stopped")
    finally:
        engine.docker("rm", "-f", "healthy-box")


def test_healthcheck_timeout_and_no_healthcheck(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--network", "none", "--name", "slow-health",
                  "--health-cmd", "sleep 5", "--health-interval", "200ms",
                  "--health-timeout", "300ms", "--health-retries", "1", busybox, "sleep", "100")
    engine.docker("run", "-d", "--network", "none", "--name", "no-health",
                  "--no-healthcheck", busybox, "sleep", "100")
    try:
        def state() -> dict:
            return engine.client().api.inspect_container("slow-health")["State"]

        wait_for(lambda: state()["Health"]["Status"] == "unhealthy", message="timeout")
        assert "exceeded timeout" in state()["Health"]["Log"][-1]["Output"]
        assert state()["Health"]["Log"][-1]["ExitCode"] == -1
        plain = engine.client().api.inspect_container("no-health")["State"]
        assert "Health" not in plain
        assert "no-health" in out(engine.docker("ps", "--filter", "health=none"))
    finally:
        engine.docker("rm", "-f", "slow-health", "no-health")


def test_healthcheck_from_the_image(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--network", "none", "--name", "hc-base", busybox, "true")
    engine.docker("commit", "-c", "HEALTHCHECK --interval=300ms CMD true", "hc-base",
                  "with-health:v1")
    try:
        engine.docker("run", "-d", "--network", "none", "--name", "hc-image", "with-health:v1",
                      "sleep", "100")
        engine.docker("run", "-d", "--network", "none", "--name", "hc-disabled",
                      "--no-healthcheck", "with-health:v1", "sleep", "100")

        def status(name: str) -> str | None:
            state = engine.client().api.inspect_container(name)["State"]
            return state.get("Health", {}).get("Status")

        wait_for(lambda: status("hc-image") == "healthy", message="healthy from the image")
        assert status("hc-disabled") is None
    finally:
        engine.docker("rm", "-f", "hc-base", "hc-image", "hc-disabled")
        engine.docker("rmi", "with-health:v1", check=False)


def test_events_of_inside_operations(engine: Engine, box: str, tmp_path: Path) -> None:
    since = str(time.time() - 1)
    engine.docker("top", box)
    engine.docker("update", "--cpu-shares", "256", box)
    engine.docker("export", "-o", str(tmp_path / "box.tar"), box)
    image = out(engine.docker("commit", box, "events-commit:v1"))
    engine.docker("rmi", "events-commit:v1")
    result = engine.docker("events", "--since", since, "--until", str(time.time() + 1),
                           "--format", "{{json .}}", "--filter", f"container={box}")
    events = [json.loads(line) for line in out(result).splitlines()]
    actions = [e["Action"] for e in events]
    for action in ("top", "update", "export", "commit"):
        assert action in actions
    commit = next(e for e in events if e["Action"] == "commit")
    assert commit["Actor"]["Attributes"]["imageID"] == image
