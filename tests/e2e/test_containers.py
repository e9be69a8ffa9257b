"""Container lifecycle end to end with the real docker CLI and the SDK:
ps, logs, attach, stop/start/restart/kill/pause/unpause/rename/wait/inspect,
rm -f and prune."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import struct
import subprocess
from pathlib import Path

import docker
import pytest

from tests.support.engine import DOCKER_CLI, Engine

pytestmark = pytest.mark.usefixtures("no_leftovers")


def text(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode().strip()


def inspect(engine: Engine, name: str) -> dict:
    return json.loads(engine.docker("inspect", name).stdout)[0]


def test_ps_filters_and_format(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "up1", "--label", "role=web", busybox, "sleep", "300")
    engine.docker("create", "--name", "made1", busybox, "true")
    assert text(engine.docker("ps", "--format", "{{.Names}}")) == "up1"
    names = text(engine.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert sorted(names) == ["made1", "up1"]
    assert text(engine.docker("ps", "-a", "--filter", "status=created",
                              "--format", "{{.Names}} {{.Status}}")) == "made1 Created"
    assert text(engine.docker("ps", "--filter", "label=role=web",
                              "--format", "{{.Names}} {{.Command}}")) == 'up1 "sleep 300"'
    status = text(engine.docker("ps", "--format", "{{.Status}}"))
    assert status.startswith("Up ")
    assert text(engine.docker("ps", "-a", "--filter", "name=made", "-q")) == \
        text(engine.docker("inspect", "-f", "{{.Id}}", "made1"))[:12]


def test_inspect_shape_and_templates(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "insp", "-e", "A=1", "--restart", "on-failure:2",
                  busybox, "sleep", "300")
    data = inspect(engine, "insp")
    assert data["Name"] == "/insp"
    assert data["State"]["Running"] is True and data["State"]["Pid"] > 0
    assert data["Path"] == "sleep" and data["Args"] == ["300"]
    assert "A=1" in data["Config"]["Env"]
    assert data["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert data["HostConfig"]["NetworkMode"] == "bridge"
    assert data["GraphDriver"]["Name"] == "overlay2"
    assert text(engine.docker("inspect", "-f", "{{.State.Status}} {{.Config.Image}}",
                              "insp")) == f"running {busybox}"
    missing = engine.docker("inspect", "nope", check=False)
    assert missing.returncode == 1 and b"No such object: nope" in missing.stderr


def test_logs_and_follow(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "talker", busybox, "sh", "-c",
                  "echo one; echo two >&2; echo three")
    logs = engine.docker("logs", "talker")
    assert logs.stdout == b"one\nthree\n" and logs.stderr == b"two\n"
    engine.docker("run", "--name", "counter", busybox, "sh", "-c", "echo 1; echo 2; echo 3")
    assert engine.docker("logs", "--tail", "2", "counter").stdout == b"2\n3\n"
    stamped = text(engine.docker("logs", "-t", "counter")).splitlines()
    assert stamped[0].endswith("Z 1") and stamped[0][:4].isdigit()

    engine.docker("run", "-d", "--name", "ticker", busybox, "sh", "-c",
                  "echo start; sleep 1; echo end")
    follow = engine.docker("logs", "-f", "ticker", timeout=30)
    assert follow.stdout == b"start\nend\n"


def test_lifecycle_commands(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "life", busybox, "sleep", "300")
    engine.docker("pause", "life")
    assert inspect(engine, "life")["State"]["Status"] == "paused"
    engine.docker("unpause", "life")
    assert inspect(engine, "life")["State"]["Status"] == "running"
    engine.docker("stop", "-t", "1", "life")
    state = inspect(engine, "life")["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137
    engine.docker("start", "life")
    first_pid = inspect(engine, "life")["State"]["Pid"]
    engine.docker("restart", "-t", "1", "life")
    state = inspect(engine, "life")["State"]
    assert state["Running"] and state["Pid"] != first_pid
    engine.docker("rename", "life", "renamed")
    assert inspect(engine, "renamed")["Name"] == "/renamed"
    engine.docker("kill", "renamed")
    assert text(engine.docker("wait", "renamed")) == "137"
    engine.docker("rm", "renamed")
    assert engine.docker("inspect", "renamed", check=False).returncode == 1


def test_stop_lets_a_trapping_process_exit(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "polite", busybox, "sh", "-c",
                  "trap 'exit 0' TERM; while true; do sleep 0.1; done")
    engine.docker("stop", "polite")
    assert inspect(engine, "polite")["State"]["ExitCode"] == 0


def test_wait_returns_the_exit_code(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "waiter", busybox, "sh", "-c", "sleep 1; exit 7")
    assert text(engine.docker("wait", "waiter")) == "7"


def test_errors_have_docker_messages(engine: Engine, busybox: str) -> None:
    for args in (("start", "ghost"), ("stop", "ghost"), ("rm", "ghost")):
        result = engine.docker(*args, check=False)
        assert result.returncode != 0
        assert b"No such container: ghost" in result.stderr, result.stderr
    engine.docker("run", "-d", "--name", "busy", busybox, "sleep", "300")
    result = engine.docker("rm", "busy", check=False)
    assert result.returncode == 1
    assert b"remove" in result.stderr and b"running container" in result.stderr.lower() \
        or b"container is running" in result.stderr
    assert b"force remove" in result.stderr
    engine.docker("rm", "-f", "busy")


def test_attach_sees_output(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "att", busybox, "sh", "-c",
                  "sleep 1; echo hello; exit 2")
    attached = subprocess.run([DOCKER_CLI, "attach", "att"], env=engine.env(),
                              capture_output=True, timeout=30)
    assert attached.stdout == b"hello\n"
    assert attached.returncode == 2


def test_prune_removes_stopped_containers(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "done1", busybox, "true")
    engine.docker("run", "-d", "--name", "alive", busybox, "sleep", "300")
    done = text(engine.docker("inspect", "-f", "{{.Id}}", "done1"))
    pruned = engine.docker("container", "prune", "-f").stdout.decode()
    assert done in pruned
    names = text(engine.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert names == ["alive"]


def test_sdk_run_create_wait_logs_remove(engine: Engine, busybox: str) -> None:
    client = engine.client()
    try:
        assert client.containers.run(busybox, "echo hi", remove=True) == b"hi\n"
        container = client.containers.create(busybox, ["sh", "-c", "echo sdk; exit 4"])
        container.start()
        assert container.wait(timeout=30)["StatusCode"] == 4
        assert container.logs() == b"sdk\n"
        container.reload()
        assert container.status == "exited"
        container.remove()
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(container.id)
        with pytest.raises(docker.errors.ImageNotFound):
            client.containers.create("no-such-image:1")
        detached = client.containers.run(busybox, "sleep 300", detach=True, name="sdkd")
        assert [c.name for c in client.containers.list()] == ["sdkd"]
        detached.remove(force=True)
    finally:
        client.close()


def test_old_api_clients(engine: Engine, busybox: str) -> None:
    client = docker.DockerClient(base_url=engine.host, version="1.24", timeout=60)
    try:
        assert client.containers.run(busybox, "echo old", remove=True) == b"old\n"
        container = client.containers.run(busybox, "sleep 300", detach=True)
        data = client.api.inspect_container(container.id)
        assert data["State"]["Running"] is True
        assert "DNSNames" not in data["NetworkSettings"]["Networks"]["bridge"]
        container.remove(force=True)
    finally:
        client.close()


def demultiplex(raw: bytes) -> list[tuple[int, bytes]]:
    """Docker's 8-byte-header frames, joined per consecutive stream."""
    frames: list[tuple[int, bytes]] = []
    while raw:
        stream, size = raw[0], struct.unpack(">I", raw[4:8])[0]
        payload, raw = raw[8:8 + size], raw[8 + size:]
        if frames and frames[-1][0] == stream:
            frames[-1] = (stream, frames[-1][1] + payload)
        else:
            frames.append((stream, payload))
    return frames


def test_sdk_attach_socket_with_stdin_once(engine: Engine, busybox: str) -> None:
    client = engine.client()
    try:
        # Not detached with stdin open: the SDK sets StdinOnce, like `docker run -i`.
        created = client.api.create_container(busybox, ["sh", "-c", "cat; echo done"],
                                              stdin_open=True)
        container = client.containers.get(created["Id"])
        sock = client.api.attach_socket(container.id, params={
            "stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        container.start()
        raw = sock._sock
        raw.sendall(b"piped\n")
        raw.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := raw.recv(4096):
            out += chunk
        raw.close()
        # Two writes in quick succession may reach the log as one frame, in
        # Docker too: compare the demultiplexed stream, not the frame cuts.
        assert demultiplex(out) == [(1, b"piped\ndone\n")]
        assert container.wait(timeout=30)["StatusCode"] == 0
        container.remove()
    finally:
        client.close()


def test_sizes_on_request(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "writer", busybox, "sh", "-c",
                  "head -c 100000 /dev/zero > /big")
    data = json.loads(engine.docker("inspect", "--size", "writer").stdout)[0]
    assert data["SizeRw"] >= 100000 and data["SizeRootFs"] >= data["SizeRw"]
    assert "SizeRw" not in inspect(engine, "writer")


def test_sdk_list_since_and_before(engine: Engine, busybox: str) -> None:
    for name in ("first", "second", "third"):
        engine.docker("create", "--name", name, busybox, "true")
    client = engine.client()
    try:
        since = [c["Names"][0] for c in client.api.containers(all=True, since="first")]
        before = [c["Names"][0] for c in client.api.containers(all=True, before="third")]
    finally:
        client.close()
    assert sorted(since) == ["/second", "/third"]
    assert sorted(before) == ["/first", "/second"]


def test_logs_since_and_until(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "timed", busybox, "sh", "-c",
                  "echo early; sleep 1.2; echo late")
    stamps = [line.split(" ", 1)[0]
              for line in text(engine.docker("logs", "-t", "timed")).splitlines()]
    assert engine.docker("logs", "--since", stamps[1], "timed").stdout == b"late\n"
    assert engine.docker("logs", "--until", stamps[0], "timed").stdout == b"early\n"


def test_prune_with_a_label_filter(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "keep", busybox, "true")
    engine.docker("run", "--name", "drop", "--label", "tmp=1", busybox, "true")
    engine.docker("container", "prune", "-f", "--filter", "label=tmp=1")
    assert text(engine.docker("ps", "-a", "--format", "{{.Names}}")) == "keep"


def api(engine: Engine, method: str, path: str) -> tuple[int, bytes]:
    """One raw Docker API request over the engine's socket."""
    connection = http.client.HTTPConnection("localhost", timeout=30)
    connection.sock = socket.socket(socket.AF_UNIX)
    connection.sock.connect(str(engine.socket))
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_status_codes(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "codes", busybox, "sleep", "300")
    assert api(engine, "POST", "/v1.50/containers/codes/start")[0] == 304
    assert api(engine, "POST", "/v1.50/containers/codes/stop?t=0")[0] == 204
    assert api(engine, "POST", "/v1.50/containers/codes/stop?t=0")[0] == 304
    status, body = api(engine, "POST", "/v1.50/containers/codes/kill")
    assert status == 409 and b"is not running" in body
    status, body = api(engine, "POST", "/v1.50/containers/codes/wait?condition=bogus")
    assert status == 400 and json.loads(body) == {"message": 'invalid condition: "bogus"'}
    status, body = api(engine, "GET", "/v1.50/containers/codes/logs")
    assert status == 400 and b"you must choose at least one stream" in body
    status, body = api(engine, "GET", "/containers/ghost/json")
    assert status == 404 and json.loads(body) == {"message": "No such container: ghost"}


def test_device_mappings(engine: Engine, busybox: str) -> None:
    listed = engine.docker("run", "--rm", "--device", "/dev/zero:/dev/myzero:rw", busybox,
                           "sh", "-c", "ls -l /dev/myzero; head -c4 /dev/myzero | od -An -tx1")
    node, zeros = listed.stdout.decode().splitlines()
    assert node.startswith("crw") and "1,   5" in node
    assert zeros.split() == ["00"] * 4
    tree = engine.docker("run", "--rm", "--device", "/dev/net", busybox, "ls", "/dev/net")
    assert tree.stdout.decode().split() == ["tun"]
    missing = engine.docker("run", "--rm", "--name", "no-device", "--device", "/dev/berth-none",
                            busybox, "true", check=False)
    assert missing.returncode != 0
    assert ('error gathering device information while adding custom device '
            '"/dev/berth-none": no such file or directory') in missing.stderr.decode()
    assert text(engine.docker("ps", "-aq", "--filter", "name=no-device")) == ""


def test_commit_of_created_and_stopped_containers(engine: Engine, busybox: str) -> None:
    client = engine.client()
    created = client.containers.create(busybox, "true", name="commit-created")
    stopped = client.containers.run(busybox, ["sh", "-c", "echo kept > /f"],
                                    name="commit-stopped", detach=True)
    stopped.wait()
    try:
        assert created.commit("committed", "created", pause=True).id.startswith("sha256:")
        image = stopped.commit("committed", "stopped", pause=True)
        out = engine.docker("run", "--rm", image.id, "cat", "/f").stdout
        assert out == b"kept\n"
    finally:
        created.remove()
        stopped.remove()
        engine.docker("rmi", "committed:created", "committed:stopped")


def test_rm_link_removes_a_legacy_link(engine: Engine, busybox: str) -> None:
    engine.docker("run", "-d", "--name", "linked", busybox, "sleep", "300")
    engine.docker("run", "-d", "--name", "linking", "--link", "linked:db", busybox,
                  "sleep", "300")
    try:
        engine.docker("rm", "--link", "/linking/db")
        assert inspect(engine, "linking")["HostConfig"]["Links"] is None
        again = engine.docker("rm", "--link", "/linking/db", check=False)
        assert b"No such container" in again.stderr
        plain = engine.docker("rm", "--link", "linking", check=False)
        assert b"cannot remove the default link name of the container" in plain.stderr
        assert inspect(engine, "linked")["State"]["Running"]
    finally:
        engine.docker("rm", "-f", "linking", "linked")


def test_isolation_annotations_and_device_requests(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--rm", "--isolation", "hyperv", busybox, "true", check=False)
    assert b"invalid isolation (hyperv): linux only supports 'default'" in result.stderr
    engine.docker("run", "-d", "--name", "annotated", "--isolation", "default",
                  "--annotation", "org.example.k=v", busybox, "sleep", "300")
    try:
        host = inspect(engine, "annotated")["HostConfig"]
        assert host["Isolation"] == "default"
        assert host["Annotations"] == {"org.example.k": "v"}
        bundle = Path(inspect(engine, "annotated")["GraphDriver"]["Data"]["UpperDir"]).parent
        spec = json.loads((bundle / "config.json").read_text())
        assert spec["annotations"] == {"org.example.k": "v"}
    finally:
        engine.docker("rm", "-f", "annotated")
    engine.docker("create", "--name", "gpus", "--gpus", "2", busybox, "true")
    try:
        requests = inspect(engine, "gpus")["HostConfig"]["DeviceRequests"]
        assert [{k: r[k] for k in ("Driver", "Count", "DeviceIDs", "Capabilities")}
                for r in requests] == [{"Driver": "", "Count": 2, "DeviceIDs": None,
                                        "Capabilities": [["gpu"]]}]
        started = engine.docker("start", "gpus", check=False)
        assert b'could not select device driver "" with capabilities: [[gpu]]' in started.stderr
    finally:
        engine.docker("rm", "gpus")


BLKIO = Path("/sys/fs/cgroup/blkio")
CGROUP_PARENT = f"berth-e2e-parent-{os.getpid()}"


def root_disk() -> tuple[str, str]:
    """The whole disk under / (the kernel throttles disks, not partitions)
    as its /dev path and its "major:minor"."""
    device = os.stat("/").st_dev
    node = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}").resolve()
    if (node / "partition").exists():
        node = node.parent
    return f"/dev/{node.name}", (node / "dev").read_text().strip()


def post_update(engine: Engine, ref: str, body: dict) -> dict:
    api = engine.client().api
    return api._result(api._post_json(api._url("/containers/{0}/update", ref), data=body), True)


@contextlib.contextmanager
def cgroup_parent_removed(engine: Engine, *containers: str):
    """runc leaves a --cgroup-parent directory behind, as it does for dockerd:
    remove it once the containers in it are gone."""
    try:
        yield CGROUP_PARENT
    finally:
        engine.docker("rm", "-f", *containers, check=False)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (hierarchy / CGROUP_PARENT).rmdir()


def test_host_config_round_trips_through_the_sdk_and_the_cli(engine: Engine,
                                                              busybox: str) -> None:
    disk, numbers = root_disk()
    weight_device = (BLKIO / "blkio.weight_device").exists()
    sent = {
        "DeviceCgroupRules": ["c 42:* rmw"],
        "BlkioWeightDevice": [{"Path": disk, "Weight": 300}],
        "BlkioDeviceReadBps": [{"Path": disk, "Rate": 1 << 20}],
        "BlkioDeviceWriteBps": [{"Path": disk, "Rate": 2 << 20}],
        "BlkioDeviceReadIOps": [{"Path": disk, "Rate": 100}],
        "BlkioDeviceWriteIOps": [{"Path": disk, "Rate": 200}],
        "UsernsMode": "host",
    }
    # dockerd drops the weight where neither CFQ nor BFQ gives its file.
    shown = {**sent, "BlkioWeightDevice": sent["BlkioWeightDevice"] if weight_device else []}
    api = engine.client().api
    with cgroup_parent_removed(engine, "hc-sdk", "hc-cli") as parent:
        host = api.create_host_config(
            cgroup_parent=parent, device_cgroup_rules=sent["DeviceCgroupRules"],
            blkio_weight_device=sent["BlkioWeightDevice"],
            device_read_bps=sent["BlkioDeviceReadBps"],
            device_write_bps=sent["BlkioDeviceWriteBps"],
            device_read_iops=sent["BlkioDeviceReadIOps"],
            device_write_iops=sent["BlkioDeviceWriteIOps"], userns_mode="host")
        created = api.create_container(busybox, ["sleep", "300"], name="hc-sdk",
                                       host_config=host)
        assert created["Warnings"] == ([] if weight_device else [
            "Your kernel does not support Block I/O weight_device or the cgroup is not "
            "mounted. Weight-device discarded."])
        engine.docker("create", "--name", "hc-cli", "--cgroup-parent", parent,
                      "--device-cgroup-rule", "c 42:* rmw", "--userns", "host",
                      "--blkio-weight-device", f"{disk}:300",
                      "--device-read-bps", f"{disk}:1mb", "--device-write-bps", f"{disk}:2mb",
                      "--device-read-iops", f"{disk}:100", "--device-write-iops", f"{disk}:200",
                      busybox, "sleep", "300")
        for name in ("hc-sdk", "hc-cli"):
            for view in (api.inspect_container(name)["HostConfig"],
                         inspect(engine, name)["HostConfig"]):
                assert {key: view[key] for key in shown} == shown
                assert view["CgroupParent"] == parent
        api.start("hc-sdk")
        cid = created["Id"]
        assert (Path("/sys/fs/cgroup/memory") / parent / cid / "cgroup.procs").read_text()
        container_blkio = BLKIO / parent / cid
        for name, rate in (("read_bps", 1 << 20), ("write_bps", 2 << 20),
                           ("read_iops", 100), ("write_iops", 200)):
            limit = (container_blkio / f"blkio.throttle.{name}_device").read_text()
            assert limit.split() == [numbers, str(rate)]
        devices = Path("/sys/fs/cgroup/devices") / parent / cid / "devices.list"
        assert "c 42:* rwm" in devices.read_text().splitlines()
        with pytest.raises(docker.errors.APIError) as running:
            post_update(engine, "hc-sdk", {"DeviceCgroupRules": ["c 43:* r"]})
        assert running.value.status_code == 409
        post_update(engine, "hc-cli", {"DeviceCgroupRules": ["c 43:* r"]})
        assert inspect(engine, "hc-cli")["HostConfig"]["DeviceCgroupRules"] == ["c 43:* r"]


def test_device_cgroup_rules_let_the_container_open_the_device(engine: Engine,
                                                               busybox: str) -> None:
    script = ("mknod /dev/fuse c 10 229 && mknod /dev/x c 42 0 && "
              "(exec 3<>/dev/fuse && echo fuse opened); head -c1 /dev/x")
    refused = engine.docker("run", "--rm", busybox, "sh", "-c", script, check=False)
    assert refused.stderr.decode().splitlines() == [
        "sh: can't create /dev/fuse: Operation not permitted",
        "head: /dev/x: Operation not permitted"]
    allowed = engine.docker("run", "--rm", "--device-cgroup-rule", "c 10:229 rwm",
                            "--device-cgroup-rule", "c 42:* rmw", busybox, "sh", "-c", script,
                            check=False)
    assert text(allowed) == "fuse opened"
    # Past the device cgroup: major 42 has no driver behind it.
    assert allowed.stderr.decode().strip() == "head: /dev/x: No such device or address"


def test_host_config_errors_are_docker_s_and_leave_nothing(engine: Engine,
                                                            busybox: str) -> None:
    api = engine.client().api
    refusals = [
        ({"DeviceCgroupRules": ["c 42 rmw"]}, "invalid device cgroup rule format: 'c 42 rmw'"),
        ({"BlkioDeviceReadBps": [{"Path": "/dev/berth-none", "Rate": 1}]},
         "stat /dev/berth-none: no such file or directory"),
        ({"UsernsMode": "private"}, "--userns: invalid USER mode"),
        ({"StorageOpt": {"size": "10G"}},
         "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"),
        ({"StorageOpt": {"Foo": "bar"}}, "Unknown option foo"),
    ]
    for host_config, message in refusals:
        with pytest.raises(docker.errors.APIError) as refused:
            api.create_container(busybox, "true", name="refused", host_config=host_config)
        assert refused.value.status_code == 400
        assert refused.value.explanation == message
    cli = engine.docker("create", "--name", "refused", "--storage-opt", "size=1G", busybox,
                        "true", check=False)
    assert "--storage-opt is supported only for overlay over xfs" in cli.stderr.decode()
    assert text(engine.docker("ps", "-aq")) == ""
    # The kernel throttles block devices only: dockerd's answer is runc's at start.
    not_a_disk = engine.docker("run", "--rm", "--device-read-bps", "/dev/null:1mb", busybox,
                               "true", check=False)
    assert 'failed to write "1:3 1048576"' in not_a_disk.stderr.decode()
    assert "no such device" in not_a_disk.stderr.decode()


def test_blkio_weight_where_the_kernel_has_no_weight_file(engine: Engine,
                                                          busybox: str) -> None:
    if (BLKIO / "blkio.weight").exists():
        pytest.skip("this kernel has blkio weights (CFQ or BFQ group scheduling)")
    warning = ("Your kernel does not support Block I/O weight or the cgroup is not mounted. "
               "Weight discarded.")
    api = engine.client().api
    created = api.create_container(busybox, ["sleep", "300"], name="weighted",
                                   host_config=api.create_host_config(blkio_weight=300))
    assert created["Warnings"] == [warning]
    api.start("weighted")
    assert api.update_container("weighted", blkio_weight=500) == {"Warnings": [warning]}
    assert inspect(engine, "weighted")["HostConfig"]["BlkioWeight"] == 0
    engine.docker("rm", "-f", "weighted")
