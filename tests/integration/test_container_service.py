"""The container service through its gRPC API, on a real engine: lifecycle,
IO, errors with Docker's messages, limits, restart policies, live restore."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from berth.container.v1 import container_pb2 as pb
from berth.container.v1 import container_pb2_grpc
from berth.types.v1 import types_pb2, types_pb2_grpc
from tests.support.engine import BERTH, REPO, Engine
from tests.support.polling import wait_for


@pytest.fixture(scope="module")
def stub(engine: Engine, busybox: str) -> Iterator[container_pb2_grpc.ContainerServiceStub]:
    channel = grpc.insecure_channel(f"unix://{engine.exec_root}/container.sock")
    yield container_pb2_grpc.ContainerServiceStub(channel)
    channel.close()


@pytest.fixture
def made(stub: container_pb2_grpc.ContainerServiceStub) -> Iterator[list[str]]:
    """IDs of containers a test made; all are force-removed afterwards."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        try:
            stub.Remove(pb.RemoveContainerRequest(id=cid, force=True))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND


def create(stub, made: list[str], *cmd: str, name: str = "", image: str = "busybox",
           host: pb.HostConfig | None = None, **config) -> str:
    host = host or pb.HostConfig(network_mode="none")
    request = pb.CreateContainerRequest(
        name=name, host_config=host,
        config=pb.ContainerConfig(image=image, cmd=types_pb2.StringList(values=cmd), **config))
    cid = stub.Create(request).id
    made.append(cid)
    return cid


def run(stub, made: list[str], *cmd: str, **kwargs) -> tuple[str, int]:
    """Create, start and wait for a container; returns its ID and exit code."""
    cid = create(stub, made, *cmd, **kwargs)
    waiting = stub.Wait(pb.WaitContainerRequest(id=cid, condition="next-exit"))
    assert next(waiting).registered
    stub.Start(pb.StartContainerRequest(id=cid))
    return cid, next(waiting).status_code


def output(stub, cid: str) -> tuple[bytes, bytes]:
    entries = list(stub.Logs(pb.LogsRequest(id=cid, stdout=True, stderr=True)))
    out = b"".join(e.data for e in entries if e.stream == pb.IOFrame.STDOUT)
    err = b"".join(e.data for e in entries if e.stream == pb.IOFrame.STDERR)
    return out, err


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return caught.value


def conmons(cid: str) -> list[str]:
    """Live (not zombie) conmon processes of container `cid`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"conmon" in cmdline and cid.encode() in cmdline and state != "Z":
            found.append(pid)
    return found


def mounts_under(path: Path) -> list[str]:
    lines = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[1] for line in lines if line.split()[1].startswith(str(path))]


def inspect(stub, cid: str) -> pb.ContainerInspect:
    return stub.Inspect(pb.InspectContainerRequest(id=cid))


def test_run_to_exit_with_logs_and_inspect(stub, made):
    cid, code = run(stub, made, "sh", "-c", "echo out; echo err >&2; exit 3", name="lifecycle")
    assert code == 3
    assert output(stub, cid) == (b"out\n", b"err\n")
    info = inspect(stub, "lifecycle")
    assert info.id == cid and info.name == "/lifecycle"
    assert info.state.status == "exited" and info.state.exit_code == 3
    assert not info.state.running and info.state.started_at.endswith("Z")
    assert info.path == "sh" and list(info.args) == ["-c", "echo out; echo err >&2; exit 3"]
    assert info.graph_driver_data["UpperDir"].endswith("/upper")
    assert info.config.hostname == cid[:12]
    assert inspect(stub, cid[:10]).id == cid
    stub.Remove(pb.RemoveContainerRequest(id=cid))
    assert rpc_error(inspect, stub, cid).code() == grpc.StatusCode.NOT_FOUND
    assert not Path(info.log_path).exists()


def test_image_config_is_merged(stub, made):
    cid, code = run(stub, made, "sh", "-c", "echo $FOO $PATH; pwd; id -u",
                    env=["FOO=bar"], working_dir="/tmp", user="nobody")
    assert code == 0
    out, _ = output(stub, cid)
    lines = out.decode().splitlines()
    assert lines[0].startswith("bar /usr/local/sbin:")
    assert lines[1:] == ["/tmp", "65534"]


def test_user_errors_have_dockers_messages(stub, made):
    error = rpc_error(lambda: create(stub, made, "true", image="nosuchimage:1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "No such image: nosuchimage:1"
    bad = rpc_error(lambda: create(stub, made, "true", name="bad name!"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.details() == ("Invalid container name (bad name!), only [a-zA-Z0-9]"
                             "[a-zA-Z0-9_.-] are allowed")
    first = create(stub, made, "true", name="taken")
    conflict = rpc_error(lambda: create(stub, made, "true", name="taken"))
    assert conflict.code() == grpc.StatusCode.ALREADY_EXISTS
    assert conflict.details().startswith(
        f'Conflict. The container name "/taken" is already in use by container "{first}".')
    memory = pb.HostConfig(network_mode="none", resources=pb.Resources(memory=1024))
    small = rpc_error(lambda: create(stub, made, "true", host=memory))
    assert small.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert small.details() == "Minimum memory limit allowed is 6MB"
    missing = rpc_error(stub.Inspect, pb.InspectContainerRequest(id="nope"))
    assert missing.details() == "No such container: nope"


def test_missing_command_and_failed_start_leave_nothing(engine, stub, made):
    cid = create(stub, made, "nope")
    error = rpc_error(stub.Start, pb.StartContainerRequest(id=cid))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "failed to create task for container: failed to create shim task: OCI runtime create "
        'failed: runc create failed: unable to start container process: exec: "nope": '
        "executable file not found in $PATH: unknown")
    state = inspect(stub, cid).state
    assert state.status == "created" and state.exit_code == 127 and "nope" in state.error
    assert not mounts_under(engine.data_root / "container" / "containers" / cid)
    assert not conmons(cid)
    assert not list(Path("/sys/fs/cgroup/memory").glob(f"*/{cid}"))
    bridged = create(stub, made, "nope", host=pb.HostConfig(network_mode="bridge"))
    rpc_error(stub.Start, pb.StartContainerRequest(id=bridged))
    netns = engine.exec_root / "netns"
    assert not (netns.exists() and any(bridged in p.name for p in netns.iterdir()))
    assert not conmons(bridged)
    denied = create(stub, made, "/etc/passwd")
    rpc_error(stub.Start, pb.StartContainerRequest(id=denied))
    assert inspect(stub, denied).state.exit_code == 126


def test_stop_kill_restart_pause_rename(stub, made):
    cid = create(stub, made, "sleep", "100", name="sleeper")
    assert not stub.Start(pb.StartContainerRequest(id=cid)).already_running
    assert stub.Start(pb.StartContainerRequest(id=cid)).already_running
    state = inspect(stub, cid).state
    assert state.running and state.pid > 0 and len(conmons(cid)) == 1

    stub.Pause(pb.ContainerRef(id=cid))
    assert inspect(stub, cid).state.paused
    error = rpc_error(stub.Kill, pb.KillContainerRequest(id=cid))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    stub.Unpause(pb.ContainerRef(id=cid))
    assert inspect(stub, cid).state.status == "running"

    invalid = rpc_error(stub.Kill, pb.KillContainerRequest(id=cid, signal="FOO"))
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert invalid.details() == "Invalid signal: FOO"

    stub.Rename(pb.RenameContainerRequest(id="sleeper", name="renamed"))
    assert inspect(stub, "renamed").name == "/renamed"

    busy = rpc_error(stub.Remove, pb.RemoveContainerRequest(id=cid))
    assert busy.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert busy.details() == (f"You cannot remove a running container {cid}. Stop the "
                              "container before attempting removal or force remove")

    began = time.monotonic()
    stub.Stop(pb.StopContainerRequest(id=cid, timeout=1))
    assert time.monotonic() - began < 5
    state = inspect(stub, cid).state
    assert state.status == "exited" and state.exit_code == 137
    assert stub.Stop(pb.StopContainerRequest(id=cid)).already_stopped
    assert not conmons(cid)

    stub.Restart(pb.RestartContainerRequest(id=cid, timeout=0))
    assert inspect(stub, cid).state.running
    stub.Kill(pb.KillContainerRequest(id=cid, signal="SIGKILL"))
    assert inspect(stub, cid).state.exit_code == 137


def test_stop_signal_ends_gracefully(stub, made):
    cid = create(stub, made, "sh", "-c",
                 "trap 'exit 7' USR1; echo ready; while true; do sleep 0.1; done",
                 stop_signal="SIGUSR1")
    stub.Start(pb.StartContainerRequest(id=cid))
    wait_for(lambda: output(stub, cid)[0] == b"ready\n", timeout=10)  # the trap is set
    stub.Stop(pb.StopContainerRequest(id=cid, timeout=10))
    assert inspect(stub, cid).state.exit_code == 7


def test_list_and_filters(stub, made):
    one = create(stub, made, "true", name="list-one", labels={"team": "a"},
                 exposed_ports=["80/tcp"])
    two = create(stub, made, "sleep", "30", name="list-two", labels={"team": "b"})
    stub.Start(pb.StartContainerRequest(id=two))

    def ids(**kwargs) -> set[str]:
        filters = types_pb2.Filters()
        for key, values in kwargs.pop("filters", {}).items():
            filters.filters[key].values.extend(values)
        reply = stub.List(pb.ListContainersRequest(filters=filters, **kwargs))
        return {c.id for c in reply.containers}

    assert two in ids() and one not in ids()
    assert {one, two} <= ids(all=True)
    assert ids(all=True, filters={"label": ["team=a"]}) == {one}
    assert ids(all=True, filters={"name": ["list-t"]}) == {two}
    assert ids(all=True, filters={"status": ["created"]}) >= {one}
    assert two not in ids(all=True, filters={"status": ["created"]})
    assert ids(all=True, filters={"id": [one[:12]]}) == {one}
    assert ids(all=True, filters={"expose": ["80"]}) == {one}
    assert ids(all=True, filters={"before": ["list-two"]}) & {one, two} == {one}
    assert ids(all=True, filters={"since": ["list-one"]}) & {one, two} == {two}
    summary = next(c for c in stub.List(pb.ListContainersRequest()).containers if c.id == two)
    assert summary.names == ["/list-two"] and summary.state == "running"
    assert summary.status.startswith("Up ") and summary.command == "sleep 30"
    bad = rpc_error(stub.List, pb.ListContainersRequest(filters=types_pb2.Filters(
        filters={"bogus": types_pb2.StringList(values=["x"])})))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def _attach(stub, requests: queue.Queue) -> Iterator[pb.IOFrame]:
    def messages():
        while (item := requests.get()) is not None:
            yield item
    return stub.Attach(messages())


def test_attach_before_start_gets_all_output_and_stdin(stub, made):
    cid = create(stub, made, "sh", "-c", "echo first; cat; echo done >&2",
                 open_stdin=True, stdin_once=True)
    requests: queue.Queue = queue.Queue()
    requests.put(pb.AttachRequest(options=pb.AttachOptions(
        id=cid, stdin=True, stdout=True, stderr=True, stream=True)))
    frames = _attach(stub, requests)
    assert next(frames).attached
    stub.Start(pb.StartContainerRequest(id=cid))
    requests.put(pb.AttachRequest(stdin=b"typed\n"))
    requests.put(pb.AttachRequest(close_stdin=True))
    received = [(f.stream, f.data) for f in frames]
    requests.put(None)
    stdout = b"".join(d for s, d in received if s == pb.IOFrame.STDOUT)
    stderr = b"".join(d for s, d in received if s == pb.IOFrame.STDERR)
    assert stdout == b"first\ntyped\n" and stderr == b"done\n"


def test_detach_keys_end_the_session_only(stub, made):
    cid = create(stub, made, "cat", open_stdin=True, tty=True)
    stub.Start(pb.StartContainerRequest(id=cid))
    requests: queue.Queue = queue.Queue()
    requests.put(pb.AttachRequest(options=pb.AttachOptions(
        id=cid, stdin=True, stdout=True, stream=True)))
    frames = _attach(stub, requests)
    assert next(frames).attached
    requests.put(pb.AttachRequest(stdin=b"hi\n\x10\x11"))
    received = list(frames)
    requests.put(None)
    assert received[-1].detached
    assert inspect(stub, cid).state.running


def test_attach_to_a_stopped_container_waits_for_its_start(stub, made):
    cid, _ = run(stub, made, "echo", "again")
    requests: queue.Queue = queue.Queue()
    requests.put(pb.AttachRequest(options=pb.AttachOptions(id=cid, stdout=True, logs=True)))
    requests.put(None)
    replay = [f.data for f in _attach(stub, requests) if not f.attached]
    assert b"".join(replay) == b"again\n"
    requests = queue.Queue()
    requests.put(pb.AttachRequest(options=pb.AttachOptions(id=cid, stdout=True, stream=True)))
    frames = _attach(stub, requests)
    assert next(frames).attached
    stub.Start(pb.StartContainerRequest(id=cid))
    assert b"".join(f.data for f in frames) == b"again\n"
    requests.put(None)


def create_running(stub, made: list[str]) -> str:
    cid = create(stub, made, "sleep", "30")
    stub.Start(pb.StartContainerRequest(id=cid))
    return cid


def test_attach_to_a_paused_container_is_refused(stub, made):
    cid = create_running(stub, made)
    stub.Pause(pb.ContainerRef(id=cid))
    requests: queue.Queue = queue.Queue()
    requests.put(pb.AttachRequest(options=pb.AttachOptions(id=cid, stdout=True, stream=True)))
    with pytest.raises(grpc.RpcError) as caught:
        list(_attach(stub, requests))
    requests.put(None)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (f"container {cid} is paused, unpause the container "
                                      "before attach")


def test_logs_follow_and_tail(stub, made):
    cid = create(stub, made, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done")
    stub.Start(pb.StartContainerRequest(id=cid))
    followed = [e.data for e in stub.Logs(pb.LogsRequest(id=cid, stdout=True, follow=True))]
    assert b"".join(followed) == b"1\n2\n3\n"
    tail = [e.data for e in stub.Logs(pb.LogsRequest(id=cid, stdout=True, tail="1"))]
    assert tail == [b"3\n"]


def test_memory_hog_is_oom_killed_and_fork_bomb_contained(stub, made):
    hog = pb.HostConfig(network_mode="none", resources=pb.Resources(memory=32 << 20))
    cid, code = run(stub, made, "sh", "-c", "x=a; while true; do x=$x$x; done", host=hog)
    assert code == 137 and inspect(stub, cid).state.oom_killed
    pids = pb.HostConfig(network_mode="none", resources=pb.Resources(pids_limit=50))
    bomb = "for i in $(seq 200); do sleep 3 & done; wait; echo survived"
    cid, _ = run(stub, made, "sh", "-c", bomb, host=pids)
    _, err = output(stub, cid)
    assert b"can't fork" in err


def test_restart_policy_on_failure_and_auto_remove(stub, made):
    policy = pb.HostConfig(network_mode="none", restart_policy=pb.RestartPolicy(
        name="on-failure", maximum_retry_count=2))
    cid = create(stub, made, "sh", "-c", "exit 1", host=policy)
    stub.Start(pb.StartContainerRequest(id=cid))
    wait_for(lambda: inspect(stub, cid).restart_count == 2
             and inspect(stub, cid).state.status == "exited", timeout=10)
    removed = create(stub, made, "true", host=pb.HostConfig(network_mode="none",
                                                            auto_remove=True))
    waiting = stub.Wait(pb.WaitContainerRequest(id=removed, condition="removed"))
    assert next(waiting).registered
    stub.Start(pb.StartContainerRequest(id=removed))
    assert next(waiting).status_code == 0
    assert rpc_error(inspect, stub, removed).code() == grpc.StatusCode.NOT_FOUND


def test_events_tell_the_lifecycle(stub, made):
    since = time.time_ns()
    cid, _ = run(stub, made, "true", name="evented")
    stub.Remove(pb.RemoveContainerRequest(id=cid))
    events = list(stub.Subscribe(types_pb2.SubscribeRequest(
        since_nano=since, until_nano=time.time_ns())))
    mine = [e for e in events if e.actor_id == cid]
    assert [e.action for e in mine] == ["create", "start", "die", "destroy"]
    assert mine[2].attributes["exitCode"] == "0"
    assert all(e.attributes["name"] == "evented" for e in mine)


def test_metrics_and_counts(engine, stub, made):
    cid = create(stub, made, "sleep", "30")
    stub.Start(pb.StartContainerRequest(id=cid))
    info_stub = types_pb2_grpc.InfoStub(grpc.insecure_channel(
        f"unix://{engine.exec_root}/container.sock"))
    info = info_stub.GetServiceInfo(types_pb2.GetServiceInfoRequest())
    assert info.object_counts["running"] >= 1
    text = urllib.request.urlopen(info.metrics_url, timeout=10).read().decode()
    assert 'berth_container_containers{state="running"}' in text
    assert f'berth_container_pids{{id="{cid}"' in text
    assert f'berth_container_cpu_seconds_total{{id="{cid}"' in text


def kill_service(engine: Engine, down_for: float = 0) -> None:
    """SIGKILL the container service; `berth up` starts it again."""
    info_stub = types_pb2_grpc.InfoStub(grpc.insecure_channel(
        f"unix://{engine.exec_root}/container.sock"))
    old_pid = info_stub.GetServiceInfo(types_pb2.GetServiceInfoRequest()).pid
    os.kill(old_pid, signal.SIGKILL)
    time.sleep(down_for)

    def serving_again() -> bool:
        try:
            info = info_stub.GetServiceInfo(types_pb2.GetServiceInfoRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return info.pid != old_pid
    wait_for(serving_again, timeout=30)


def test_containers_survive_a_service_restart(engine, stub, made):
    keeps = create(stub, made, "sleep", "100")
    stub.Start(pb.StartContainerRequest(id=keeps))
    ends = create(stub, made, "sh", "-c", "sleep 1; exit 5")
    stub.Start(pb.StartContainerRequest(id=ends))
    always = create(stub, made, "sh", "-c", "sleep 1; exit 2", host=pb.HostConfig(
        network_mode="none", restart_policy=pb.RestartPolicy(name="always")))
    stub.Start(pb.StartContainerRequest(id=always))
    kill_service(engine, down_for=1.5)  # `ends` exits while the service is down
    assert inspect(stub, keeps).state.running and len(conmons(keeps)) == 1
    state = inspect(stub, ends).state
    assert state.status == "exited" and state.exit_code == 5
    wait_for(lambda: inspect(stub, always).restart_count >= 1, timeout=10)
    stub.Stop(pb.StopContainerRequest(id=keeps, timeout=0))
    assert inspect(stub, keeps).state.exit_code == 137
    assert not conmons(keeps)


def test_ctl_runs_without_the_gateway(engine, stub):
    result = subprocess.run(
        [*BERTH, "ctl", "--data-root", str(engine.data_root), "--exec-root",
         str(engine.exec_root), "container", "run", "--rm", "--network", "none", "busybox",
         "sh", "-c", "echo via ctl; exit 4"], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == 4, result.stderr
    assert result.stdout == b"via ctl\n"


def _status_field(out: str, name: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith(name + ":"))


def test_host_config_reaches_the_runtime(stub, made):
    host = pb.HostConfig(
        network_mode="none", cap_drop=["ALL"], cap_add=["NET_ADMIN"], readonly_rootfs=True,
        shm_size=16 << 20, sysctls={"kernel.msgmax": "65536"}, init=True,
        security_opt=["no-new-privileges"], group_add=["mail"],
        resources=pb.Resources(ulimits=[pb.Ulimit(name="nofile", soft=1 << 30, hard=1 << 30)]))
    script = ("cat /proc/self/status; touch /x 2>/dev/null || echo readonly; "
              "df -k /dev/shm | tail -1; cat /proc/sys/kernel/msgmax; ulimit -n; "
              "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; id -G")
    cid, code = run(stub, made, "sh", "-c", script, host=host, hostname="box")
    assert code == 0
    out = output(stub, cid)[0].decode()
    assert _status_field(out, "CapEff") == f"{1 << 12:016x}"
    assert _status_field(out, "NoNewPrivs") == "1"
    assert _status_field(out, "Seccomp") == "2"
    lines = out.splitlines()
    tail = lines[lines.index("readonly"):]
    assert tail[1].split()[1] == str(16 << 10)
    assert tail[2] == "65536"
    assert tail[3] == "20000"  # clamped to the host's hard limit
    assert tail[4].startswith("/sbin/docker-init -- sh -c")
    assert tail[5] == "box"
    assert tail[6].split() == ["0", "10", "12"]  # root is in wheel in the image


def test_privileged_and_unconfined(stub, made):
    host = pb.HostConfig(network_mode="none", privileged=True)
    cid, _ = run(stub, made, "cat", "/proc/self/status", host=host)
    out = output(stub, cid)[0].decode()
    host_caps = _status_field(Path("/proc/self/status").read_text(), "CapBnd")
    assert _status_field(out, "CapEff") == host_caps
    assert _status_field(out, "Seccomp") == "0"
    host = pb.HostConfig(network_mode="none", security_opt=["seccomp=unconfined"])
    cid, _ = run(stub, made, "cat", "/proc/self/status", host=host)
    assert _status_field(output(stub, cid)[0].decode(), "Seccomp") == "0"


def test_resize_reaches_the_tty(stub, made):
    cid = create(stub, made, "sh", "-c", "sleep 1; stty size", tty=True)
    waiting = stub.Wait(pb.WaitContainerRequest(id=cid, condition="next-exit"))
    next(waiting)
    stub.Start(pb.StartContainerRequest(id=cid))
    stub.Resize(pb.ResizeRequest(id=cid, height=33, width=101))
    next(waiting)
    assert output(stub, cid)[0].strip() == b"33 101"


def test_prune_and_sizes(stub, made):
    cid, _ = run(stub, made, "sh", "-c", "head -c 4096 /dev/zero > /blob", labels={"p": "1"})
    info = stub.Inspect(pb.InspectContainerRequest(id=cid, size=True))
    assert info.size_rw >= 4096 and info.size_root_fs > info.size_rw
    keep = create(stub, made, "true", labels={"p": "2"})
    filters = types_pb2.Filters(filters={"label": types_pb2.StringList(values=["p=1"])})
    reply = stub.Prune(pb.PruneContainersRequest(filters=filters))
    assert list(reply.deleted) == [cid] and reply.space_reclaimed >= 4096
    assert inspect(stub, keep).id == keep


def test_logs_rotate_per_log_config(stub, made):
    host = pb.HostConfig(network_mode="none", log_config=pb.LogConfig(
        type="json-file", config={"max-size": "2k", "max-file": "3"}))
    script = "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo line$i; sleep 0.01; done"
    cid, code = run(stub, made, "sh", "-c", script, host=host)
    assert code == 0
    log_path = Path(inspect(stub, cid).log_path)
    files = {p.name for p in log_path.parent.glob("container.log*")}
    assert {"container.log.1", "container.log.2"} <= files <= {
        "container.log", "container.log.1", "container.log.2"}
    numbers = [int(line[4:]) for line in output(stub, cid)[0].decode().split()]
    assert numbers == list(range(numbers[0], 401)) and numbers[0] > 1


def test_large_stdin_arrives_whole(stub, made):
    cid = create(stub, made, "sh", "-c", "cat | md5sum", open_stdin=True, stdin_once=True)
    payload = os.urandom(1_000_000)
    requests: queue.Queue = queue.Queue()
    requests.put(pb.AttachRequest(options=pb.AttachOptions(
        id=cid, stdin=True, stdout=True, stream=True)))
    frames = _attach(stub, requests)
    assert next(frames).attached
    stub.Start(pb.StartContainerRequest(id=cid))
    for start in range(0, len(payload), 100_000):
        requests.put(pb.AttachRequest(stdin=payload[start:start + 100_000]))
    requests.put(pb.AttachRequest(close_stdin=True))
    received = b"".join(f.data for f in frames)
    requests.put(None)
    assert received.split()[0].decode() == hashlib.md5(payload).hexdigest()


def test_custom_seccomp_profile(stub, made):
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]})
    host = pb.HostConfig(network_mode="none", security_opt=[f"seccomp={profile}"])
    cid, code = run(stub, made, "mkdir", "/made", host=host)
    assert code == 1 and b"Operation not permitted" in output(stub, cid)[1]
    broken = pb.HostConfig(network_mode="none", security_opt=["seccomp={nope"])
    error = rpc_error(lambda: create(stub, made, "true", host=broken))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stop_events_in_dockers_order(stub, made):
    cid = create(stub, made, "sleep", "30")  # PID 1 without a handler ignores SIGTERM
    stub.Start(pb.StartContainerRequest(id=cid))
    since = time.time_ns()
    stub.Stop(pb.StopContainerRequest(id=cid, timeout=1))
    events = [e for e in stub.Subscribe(types_pb2.SubscribeRequest(
        since_nano=since, until_nano=time.time_ns())) if e.actor_id == cid]
    assert [(e.action, e.attributes.get("signal", e.attributes.get("exitCode")))
            for e in events] == [("kill", "15"), ("kill", "9"), ("die", "137"), ("stop", None)]


def test_a_start_cut_short_by_a_crash_is_undone(engine, stub, made):
    cid = create(stub, made, "true")
    dirs = inspect(stub, cid).graph_driver_data
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={dirs['LowerDir']},upperdir={dirs['UpperDir']},"
                    f"workdir={dirs['WorkDir']}", dirs["MergedDir"]], check=True)
    kill_service(engine)
    wait_for(lambda: not os.path.ismount(dirs["MergedDir"]), timeout=10)
    assert inspect(stub, cid).state.status == "created"


def test_ctl_top_and_stats(engine, stub, made):
    cid = create(stub, made, "sleep", "300")
    stub.Start(pb.StartContainerRequest(id=cid))
    ctl = [*BERTH, "ctl", "--data-root", str(engine.data_root), "--exec-root",
           str(engine.exec_root), "container"]
    top = subprocess.run([*ctl, "top", cid, "-o", "pid,comm"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    assert top.stdout.split()[:2] == ["PID", "COMMAND"] and "sleep" in top.stdout
    stats = subprocess.run([*ctl, "stats", cid, "--json"], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["pidsCurrent"] == "1"


def test_kept_mounted_while_the_call_lasts(engine, stub, made):
    """KeepMounted: one mount of a stopped container's file system for the
    reads that follow, gone when the caller cancels, goes away, or the
    container is removed first."""
    cid = create(stub, made, "true")
    merged = inspect(stub, cid).graph_driver_data["MergedDir"]
    kept = stub.KeepMounted(pb.ContainerRef(id=cid))
    next(kept)
    assert os.path.ismount(merged)
    request = pb.PathRequest(id=cid, path="/etc/passwd", rootfs_only=True)
    assert stub.StatPath(request).name == "passwd"
    assert b"root:" in b"".join(chunk.data for chunk in stub.GetArchive(request))
    assert os.path.ismount(merged), "a read within the call does not unmount"
    kept.cancel()
    wait_for(lambda: not os.path.ismount(merged), timeout=10)

    other = grpc.insecure_channel(f"unix://{engine.exec_root}/container.sock")
    next(container_pb2_grpc.ContainerServiceStub(other).KeepMounted(pb.ContainerRef(id=cid)))
    assert os.path.ismount(merged)
    other.close()   # the caller goes away without cancelling
    wait_for(lambda: not os.path.ismount(merged), timeout=10)

    kept = stub.KeepMounted(pb.ContainerRef(id=cid))
    next(kept)
    stub.Remove(pb.RemoveContainerRequest(id=cid, force=True))
    kept.cancel()
    assert not os.path.exists(merged)
    with pytest.raises(grpc.RpcError) as missing:
        next(stub.KeepMounted(pb.ContainerRef(id=cid)))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
