"""Issue 7: the volume service through the docker CLI, the SDK and gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from tests.support.engine import BERTH, REPO, Engine

HOLDER = "f" * 64
INVALID_CHARS = ('includes invalid characters for a local volume name, only '
                 '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                 'directory, use absolute path')


def status(engine: Engine) -> dict[str, dict]:
    out = subprocess.run([*BERTH, "status", "--exec-root", str(engine.exec_root), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    return {row["service"]: row for row in json.loads(out.stdout)}


def mount_points() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


def volume_stub(engine: Engine) -> Iterator[volume_pb2_grpc.VolumeServiceStub]:
    with grpc.insecure_channel(f"unix://{engine.exec_root / 'volume.sock'}") as channel:
        yield volume_pb2_grpc.VolumeServiceStub(channel)


@pytest.fixture
def volumes(engine: Engine) -> Iterator[volume_pb2_grpc.VolumeServiceStub]:
    """The volume service's stub; afterwards the test holder's leases and all volumes go."""
    for stub in volume_stub(engine):
        yield stub
        stub.Release(volume_pb2.ReleaseVolumeRequest(holder=HOLDER))
    engine.clean()


def curl(engine: Engine, *args: str) -> tuple[int, dict | list | None]:
    out = subprocess.run(["curl", "-sS", "--unix-socket", str(engine.socket), "-w",
                          "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body) if body.strip() else None


def error_of(engine: Engine, *args: str) -> str:
    result = engine.docker(*args, check=False)
    assert result.returncode != 0
    return result.stderr.decode().strip()


def test_create_inspect_list_remove(engine: Engine, volumes) -> None:
    engine.docker("volume", "create", "--label", "team=a", "--label", "tier", "data1")
    info = json.loads(engine.docker("volume", "inspect", "data1").stdout)[0]
    assert info["Name"] == "data1"
    assert info["Driver"] == "local"
    assert info["Scope"] == "local"
    assert info["Labels"] == {"team": "a", "tier": ""}
    assert info["Mountpoint"] == str(engine.data_root / "volume/volumes/data1/_data")
    assert os.path.isdir(info["Mountpoint"])
    assert info["CreatedAt"].endswith("Z")
    again = engine.client().volumes.create("data1", labels={"other": "x"})
    assert again.attrs["Labels"] == {"team": "a", "tier": ""}
    engine.docker("volume", "create", "data2")
    names = engine.docker("volume", "ls", "-q").stdout.decode().split()
    assert names == ["data1", "data2"]
    assert engine.docker("volume", "rm", "data1", "data2").stdout.decode().split() == [
        "data1", "data2"]
    assert not os.path.exists(info["Mountpoint"])
    assert error_of(engine, "volume", "inspect", "data1") == (
        "Error response from daemon: get data1: no such volume")
    assert engine.docker("volume", "rm", "-f", "data1").returncode == 0


def test_generated_name_and_sdk(engine: Engine, volumes) -> None:
    client = engine.client()
    volume = client.volumes.create()
    assert len(volume.name) == 64 and int(volume.name, 16) >= 0
    assert client.volumes.get(volume.name).attrs["Mountpoint"].endswith(
        f"/{volume.name}/_data")
    volume.remove()
    with pytest.raises(docker.errors.NotFound, match="no such volume"):
        client.volumes.get(volume.name)


def test_list_filters(engine: Engine, volumes) -> None:
    engine.docker("volume", "create", "--label", "env=prod", "web-prod")
    engine.docker("volume", "create", "--label", "env=dev", "web-dev")
    engine.docker("volume", "create", "db")
    volumes.Acquire(volume_pb2.AcquireVolumeRequest(name="db", holder=HOLDER))

    def names(*filters: str) -> list[str]:
        args = [arg for f in filters for arg in ("--filter", f)]
        return sorted(engine.docker("volume", "ls", "-q", *args).stdout.decode().split())
    assert names("name=web") == ["web-dev", "web-prod"]
    assert names("label=env") == ["web-dev", "web-prod"]
    assert names("label=env=prod") == ["web-prod"]
    assert names("label=env=prod", "name=dev") == []
    assert names("dangling=true") == ["web-dev", "web-prod"]
    assert names("dangling=false") == ["db"]
    assert names("driver=local") == ["db", "web-dev", "web-prod"]
    code, body = curl(engine, "-g", 'http://d/volumes?filters={"bogus":["x"]}')
    assert (code, body) == (400, {"message": "invalid filter 'bogus'"})
    code, body = curl(engine, "-g", 'http://d/volumes?filters={"dangling":["maybe"]}')
    assert (code, body) == (400, {"message": "invalid filter 'dangling=[maybe]'"})
    code, body = curl(engine, "http://d/volumes")
    assert code == 200 and body["Warnings"] == [] and len(body["Volumes"]) == 3


@pytest.mark.parametrize(("name", "message"), [
    ("a/b", f'create a/b: "a/b" {INVALID_CHARS}'),
    ("..", f'create ..: ".." {INVALID_CHARS}'),
    ("-lead", f'create -lead: "-lead" {INVALID_CHARS}'),
    ("x", "create x: volume name is too short, names should be at least two alphanumeric "
          "characters"),
])
def test_bad_names_are_400(engine: Engine, name: str, message: str) -> None:
    code, body = curl(engine, "-XPOST", "-H", "Content-Type: application/json",
                      "http://d/volumes/create", "-d", json.dumps({"Name": name}))
    assert (code, body) == (400, {"message": message})


def test_too_long_name_is_refused(engine: Engine) -> None:
    name = "a" * 300
    code, body = curl(engine, "-XPOST", "-H", "Content-Type: application/json",
                      "http://d/volumes/create", "-d", json.dumps({"Name": name}))
    assert code == 400 and "file name too long" in body["message"]
    assert not (engine.data_root / "volume/volumes" / name[:200]).exists()


def test_unknown_driver_and_bad_options(engine: Engine) -> None:
    assert error_of(engine, "volume", "create", "-d", "unknown", "u1") == (
        'Error response from daemon: create u1: error looking up volume plugin unknown: '
        'plugin "unknown" not found')
    assert error_of(engine, "volume", "create", "-o", "foo=bar", "u1") == (
        'Error response from daemon: create u1: invalid option: "foo"')
    assert error_of(engine, "volume", "create", "-o", "type=tmpfs", "u1") == (
        'Error response from daemon: create u1: missing required option: "device"')
    assert engine.docker("volume", "ls", "-q").stdout == b""


def test_in_use_volume_is_409_also_after_a_restart(engine: Engine, busybox: str) -> None:
    # The holder is a real container: a restarted volume service learns from
    # the container service which holders still exist (reconcile after a crash).
    holder = engine.docker("create", "-v", "busy:/data", busybox, "true").stdout.decode().strip()
    message = f"Error response from daemon: remove busy: volume is in use - [{holder}]"
    assert error_of(engine, "volume", "rm", "busy") == message
    assert error_of(engine, "volume", "rm", "-f", "busy") == message
    engine.docker("volume", "prune", "-af")
    before = status(engine)["volume"]["pid"]
    os.kill(before, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        row = status(engine)["volume"]
        if row["health"] == "SERVING" and row["pid"] != before:
            break
        time.sleep(0.2)
    assert row["pid"] != before
    assert error_of(engine, "volume", "rm", "busy") == message
    engine.docker("rm", holder)
    engine.docker("volume", "rm", "busy")


def test_acquire_without_name_makes_anonymous_volume(engine: Engine, volumes) -> None:
    reply = volumes.Acquire(volume_pb2.AcquireVolumeRequest(holder=HOLDER))
    assert reply.created and len(reply.volume.name) == 64 and reply.volume.anonymous
    assert "com.docker.volume.anonymous" in reply.volume.labels
    removed = volumes.Release(volume_pb2.ReleaseVolumeRequest(holder=HOLDER,
                                                              remove_anonymous=True))
    assert list(removed.removed) == [reply.volume.name]
    assert engine.docker("volume", "ls", "-q").stdout == b""


def test_tmpfs_volume_is_mounted_while_leased(engine: Engine, volumes) -> None:
    engine.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs",
                  "-o", "o=size=1m", "scratch")
    info = json.loads(engine.docker("volume", "inspect", "scratch").stdout)[0]
    assert info["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    assert not os.path.ismount(info["Mountpoint"])
    volumes.Acquire(volume_pb2.AcquireVolumeRequest(name="scratch", holder=HOLDER))
    assert os.path.ismount(info["Mountpoint"])
    assert os.statvfs(info["Mountpoint"]).f_blocks * os.statvfs(info["Mountpoint"]).f_frsize \
        == 1 << 20
    volumes.Release(volume_pb2.ReleaseVolumeRequest(name="scratch", holder=HOLDER))
    assert not os.path.ismount(info["Mountpoint"])


def test_bind_volume_of_missing_path_fails_on_first_mount(engine: Engine, volumes,
                                                          tmp_path) -> None:
    engine.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o",
                  f"device={tmp_path}/missing", "hostdir")
    with pytest.raises(grpc.RpcError) as caught:
        volumes.Acquire(volume_pb2.AcquireVolumeRequest(name="hostdir", holder=HOLDER))
    assert "error while mounting volume" in caught.value.details()
    assert engine.docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split() == [
        b"hostdir"]
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "file").write_text("host")
    reply = volumes.Acquire(volume_pb2.AcquireVolumeRequest(name="hostdir", holder=HOLDER))
    assert Path(reply.host_path, "file").read_text() == "host"
    assert reply.host_path in mount_points()
    engine.docker("volume", "prune", "-af")
    volumes.Release(volume_pb2.ReleaseVolumeRequest(holder=HOLDER))
    assert reply.host_path not in mount_points()
    (tmp_path / "missing" / "other").write_text("host")
    engine.docker("volume", "rm", "hostdir")
    assert sorted(p.name for p in (tmp_path / "missing").iterdir()) == ["file", "other"]


def test_prune_anonymous_by_default_all_and_labels(engine: Engine, volumes) -> None:
    engine.docker("volume", "create", "named")
    engine.docker("volume", "create", "--label", "keep", "kept")
    anonymous = volumes.Acquire(volume_pb2.AcquireVolumeRequest(holder=HOLDER)).volume.name
    volumes.Release(volume_pb2.ReleaseVolumeRequest(holder=HOLDER))
    (engine.data_root / "volume/volumes" / anonymous / "_data" / "f").write_bytes(b"x" * 5000)
    result = engine.client().volumes.prune()
    assert result == {"VolumesDeleted": [anonymous], "SpaceReclaimed": 5000}
    code, body = curl(engine, "-XPOST", "-g",
                      'http://d/volumes/prune?filters={"all":["true"],"label!":["keep"]}')
    assert (code, body) == (200, {"VolumesDeleted": ["named"], "SpaceReclaimed": 0})
    code, body = curl(engine, "-XPOST", "-g", 'http://d/volumes/prune?filters={"x":["1"]}')
    assert (code, body) == (400, {"message": "invalid filter 'x'"})
    code, body = curl(engine, "-XPOST", "http://d/v1.41/volumes/prune")
    assert body["VolumesDeleted"] == ["kept"]
    code, body = curl(engine, "-XPOST", "http://d/volumes/prune")
    assert (code, body) == (200, {"VolumesDeleted": [], "SpaceReclaimed": 0})


def test_events_usage_and_metrics(engine: Engine, volumes) -> None:
    since = str(time.time())
    engine.docker("volume", "create", "evt")
    volumes.Acquire(volume_pb2.AcquireVolumeRequest(name="evt", holder=HOLDER,
                                                    destination="/d"))
    (engine.data_root / "volume/volumes/evt/_data/blob").write_bytes(b"y" * 3000)
    listed = volumes.List(volume_pb2.ListVolumesRequest(usage=True)).volumes
    assert [(v.usage_data.size, v.usage_data.ref_count) for v in listed] == [(3000, 1)]
    volumes.Release(volume_pb2.ReleaseVolumeRequest(holder=HOLDER))
    engine.docker("volume", "rm", "evt")
    out = engine.docker("events", "--since", since, "--until", str(time.time()),
                        "--filter", "type=volume", "--format", "{{json .}}").stdout
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["Action"] for e in events] == ["create", "mount", "unmount", "destroy"]
    assert events[1]["Actor"]["Attributes"]["container"] == HOLDER
    assert events[1]["Actor"]["Attributes"]["destination"] == "/d"
    url = status(engine)["volume"]["metrics_url"]
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["berth_volume_volumes"].samples[0].value == 0
    assert "berth_volume_bytes" in families


def test_ctl_volume(engine: Engine, volumes) -> None:
    def ctl(*args: str) -> str:
        out = subprocess.run([*BERTH, "ctl", "--exec-root", str(engine.exec_root), "volume",
                              *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout
    assert ctl("create", "--label", "a=b", "ctl1").strip() == "ctl1"
    assert "ctl1" in ctl("ls")
    assert json.loads(ctl("inspect", "ctl1"))["labels"] == {"a": "b"}
    assert "ctl1" in ctl("prune", "--all")
    assert ctl("ls", "--json").strip() == "[]"


def test_leases_of_gone_containers_are_dropped_when_the_container_service_starts(
        engine: Engine, volumes) -> None:
    engine.docker("volume", "create", "orphan")
    volumes.Acquire(volume_pb2.AcquireVolumeRequest(name="orphan", holder=HOLDER))
    before = status(engine)["container"]["pid"]
    os.kill(before, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not engine.docker("volume", "ls", "-q", "--filter", "dangling=false").stdout:
            break
        time.sleep(0.2)
    assert status(engine)["container"]["pid"] != before
    engine.docker("volume", "rm", "orphan")
