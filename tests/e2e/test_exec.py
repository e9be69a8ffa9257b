"""docker exec end to end: output, exit codes, stdin, env/user/workdir,
detach, TTY with resize, inspect, errors and events."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request

import docker
import pexpect
import pytest

from tests.support.engine import DOCKER_CLI, Engine


def out(result) -> str:
    return result.stdout.decode().strip()


@pytest.fixture(scope="module")
def box(engine: Engine, busybox: str):
    name = "exec-box"
    engine.docker("run", "-d", "--network", "none", "--name", name, "-e", "FROM_RUN=1",
                  busybox, "sleep", "1000")
    yield name
    engine.docker("rm", "-f", name, check=False)


def test_exec_runs_in_the_container(engine: Engine, box: str) -> None:
    assert out(engine.docker("exec", box, "echo", "hello")) == "hello"
    assert out(engine.docker("exec", box, "cat", "/proc/1/cmdline")) == "sleep\x001000\x00"
    assert out(engine.docker("exec", box, "sh", "-c", "echo $FROM_RUN")) == "1"


def test_exit_codes_and_stderr(engine: Engine, box: str) -> None:
    assert engine.docker("exec", box, "false", check=False).returncode == 1
    result = engine.docker("exec", box, "sh", "-c", "echo oops >&2; exit 3", check=False)
    assert result.returncode == 3 and result.stderr.decode().strip() == "oops"
    missing = engine.docker("exec", box, "no-such-binary", check=False)
    assert missing.returncode == 127
    assert "executable file not found" in missing.stdout.decode() + missing.stderr.decode()
    assert engine.docker("exec", box, "/etc/passwd", check=False).returncode == 126


def test_stdin_env_user_and_workdir(engine: Engine, box: str) -> None:
    assert out(engine.docker("exec", "-i", box, "cat", input=b"piped\n")) == "piped"
    assert out(engine.docker("exec", "-e", "A=b", box, "sh", "-c", "echo $A")) == "b"
    assert out(engine.docker("exec", "-u", "1234:55", box, "id", "-u")) == "1234"
    assert out(engine.docker("exec", "-u", "nobody", box, "id", "-un")) == "nobody"
    assert out(engine.docker("exec", "-w", "/etc", box, "pwd")) == "/etc"
    unknown = engine.docker("exec", "-u", "nosuchuser", box, "true", check=False)
    assert unknown.returncode == 126
    assert "unable to find user nosuchuser" in unknown.stdout.decode() + unknown.stderr.decode()


def test_detached_exec_keeps_running(engine: Engine, box: str) -> None:
    engine.docker("exec", "-d", box, "sh", "-c", "sleep 0.3; touch /tmp/detached")
    deadline = time.monotonic() + 10
    while engine.docker("exec", box, "test", "-f", "/tmp/detached", check=False).returncode:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_exec_inspect_through_the_sdk(engine: Engine, box: str) -> None:
    client = engine.client()
    api = client.api
    exec_id = api.exec_create(box, ["sh", "-c", "exit 7"], user="root")["Id"]
    assert exec_id in api.inspect_container(box)["ExecIDs"]
    before = api.exec_inspect(exec_id)
    assert before["Running"] is False and before["ExitCode"] is None
    assert before["ProcessConfig"] == {"entrypoint": "sh", "arguments": ["-c", "exit 7"],
                                       "tty": False, "privileged": False, "user": "root"}
    api.exec_start(exec_id)
    after = api.exec_inspect(exec_id)
    assert after["ExitCode"] == 7 and after["Running"] is False
    assert exec_id not in (api.inspect_container(box)["ExecIDs"] or [])
    running = api.exec_create(box, ["sleep", "30"])["Id"]
    api.exec_start(running, detach=True)
    live = api.exec_inspect(running)
    assert live["Running"] is True and live["Pid"] > 0
    os.kill(live["Pid"], signal.SIGKILL)
    assert after["ContainerID"] == client.containers.get(box).id
    with pytest.raises(docker.errors.NotFound):
        api.exec_inspect("nope")
    result = client.containers.get(box).exec_run(["sh", "-c", "echo a; echo b >&2"], demux=True)
    assert result.exit_code == 0 and result.output == (b"a\n", b"b\n")


def test_exec_needs_a_running_unpaused_container(engine: Engine, busybox: str) -> None:
    engine.docker("create", "--network", "none", "--name", "exec-stopped", busybox, "true")
    cid = out(engine.docker("inspect", "-f", "{{.Id}}", "exec-stopped"))
    stopped = engine.docker("exec", "exec-stopped", "true", check=False)
    assert stopped.returncode != 0
    assert f"container {cid} is not running" in stopped.stderr.decode()
    engine.docker("rm", "exec-stopped")

    engine.docker("run", "-d", "--network", "none", "--name", "exec-paused", busybox,
                  "sleep", "100")
    engine.docker("pause", "exec-paused")
    cid = out(engine.docker("inspect", "-f", "{{.Id}}", "exec-paused"))
    paused = engine.docker("exec", "exec-paused", "true", check=False)
    assert (f"Container {cid} is paused, unpause the container before exec"
            in paused.stderr.decode())
    engine.docker("unpause", "exec-paused")
    engine.docker("rm", "-f", "exec-paused")
    missing = engine.docker("exec", "no-such-container", "true", check=False)
    assert "No such container: no-such-container" in missing.stderr.decode()


def test_exec_events(engine: Engine, box: str) -> None:
    since = str(time.time() - 1)
    engine.docker("exec", box, "sh", "-c", "exit 4", check=False)
    until = str(time.time() + 1)
    result = engine.docker("events", "--since", since, "--until", until, "--format",
                           "{{json .}}", "--filter", f"container={box}")
    events = [json.loads(line) for line in out(result).splitlines()]
    actions = [e["Action"] for e in events]
    assert "exec_create: sh -c exit 4" in actions and "exec_start: sh -c exit 4" in actions
    died = [e for e in events if e["Action"] == "exec_die"]
    assert died and died[-1]["Actor"]["Attributes"]["exitCode"] == "4"
    assert died[-1]["Actor"]["Attributes"]["execID"]


def test_interactive_tty_with_resize(engine: Engine, box: str) -> None:
    child = pexpect.spawn(DOCKER_CLI, ["exec", "-it", box, "sh"], env=engine.env(),
                          dimensions=(30, 100), timeout=20)
    try:
        child.expect(r"[#$] ")
        child.sendline("echo term=$TERM")
        child.expect("term=xterm")
        child.sendline("stty size")
        child.expect(r"30 100")
        child.setwinsize(40, 120)
        # The CLI forwards the resize when it sees SIGWINCH: ask until it has.
        for _ in range(20):
            child.sendline("stty size")
            if child.expect([r"40 120", r"30 100"]) == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the resize never reached the exec's terminal")
        child.sendline("exit 5")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 5


def test_privileged_exec_gets_every_capability(engine: Engine, box: str) -> None:
    def effective_caps(*flags: str) -> int:
        status = out(engine.docker("exec", *flags, box, "cat", "/proc/self/status"))
        line = next(line for line in status.splitlines() if line.startswith("CapEff:"))
        return int(line.split()[1], 16)

    assert bin(effective_caps("--privileged")).count("1") > bin(effective_caps()).count("1")


def test_detach_keys_leave_the_exec_running(engine: Engine, box: str) -> None:
    child = pexpect.spawn(DOCKER_CLI, ["exec", "-it", "--detach-keys", "ctrl-x,x", box, "sh",
                                       "-c", "echo ready; sleep 3; touch /tmp/after-detach"],
                          env=engine.env(), timeout=20)
    try:
        child.expect("ready")
        child.send("\x18x")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    deadline = time.monotonic() + 10
    while engine.docker("exec", box, "test", "-f", "/tmp/after-detach", check=False).returncode:
        assert time.monotonic() < deadline, "the detached exec did not keep running"
        time.sleep(0.2)


def test_exec_metrics(engine: Engine, box: str) -> None:
    engine.docker("exec", box, "true")
    match = re.search(r"container service serving on \S+, metrics at (\S+)", engine.logs())
    assert match
    with urllib.request.urlopen(match.group(1), timeout=10) as response:
        text = response.read().decode()
    assert 'berth_container_exec_starts_total{result="started"}' in text
    assert "berth_container_exec_start_seconds_count" in text


def test_large_output_and_input_arrive_whole(engine: Engine, box: str) -> None:
    result = engine.docker("exec", box, "sh", "-c",
                           "head -c 5000000 /dev/zero; head -c 300000 /dev/zero >&2")
    assert len(result.stdout) == 5_000_000 and len(result.stderr) == 300_000
    payload = os.urandom(3_000_000)
    echoed = engine.docker("exec", "-i", box, "cat", input=payload)
    assert echoed.stdout == payload


def upgraded_exec_start(engine: Engine, exec_id: str) -> bytes:
    """POST /exec/{id}/start with `Upgrade: tcp`, read from the raw socket to
    its end: what follows the 101's headers. (docker-py reads the headers
    through a buffer and the stream from the socket, so output that arrives
    with the headers is lost to it: a race the error reply below makes likely.)"""
    body = b'{"Detach": false, "Tty": false}'
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(engine.socket))
        sock.sendall(f"POST /v1.50/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
                     "Content-Type: application/json\r\nConnection: Upgrade\r\n"
                     f"Upgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, stream = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 UPGRADED"), head
    return stream


def test_starting_an_exec_twice(engine: Engine, box: str) -> None:
    api = engine.client().api
    exec_id = api.exec_create(box, ["true"])["Id"]
    api.exec_start(exec_id)
    again = upgraded_exec_start(engine, exec_id)
    assert f"Exec command {exec_id} has already run".encode() in again
    with pytest.raises(docker.errors.APIError) as detached:
        api.exec_start(exec_id, detach=True)
    assert detached.value.status_code == 409
    failing = api.exec_create(box, ["no-such-binary"])["Id"]
    with pytest.raises(docker.errors.APIError) as refused:
        api.exec_start(failing, detach=True)
    assert refused.value.status_code == 400
    assert api.exec_inspect(failing)["ExitCode"] == 127


def test_an_exec_not_started_ends_with_its_containers_run(engine: Engine, busybox: str) -> None:
    """dockerd drops the execs not yet started when their container exits
    (start and inspect: 404); one that ran stays inspectable with its code."""
    api = engine.client().api
    engine.docker("run", "-d", "--network", "none", "--name", "exec-run-ends", busybox,
                  "sleep", "1000")
    try:
        ran = api.exec_create("exec-run-ends", ["sh", "-c", "exit 3"])["Id"]
        api.exec_start(ran)
        pending = api.exec_create("exec-run-ends", ["true"])["Id"]
        engine.docker("stop", "-t", "0", "exec-run-ends")
        with pytest.raises(docker.errors.NotFound, match=f"No such exec instance: {pending}"):
            api.exec_start(pending, detach=True)
        with pytest.raises(docker.errors.NotFound):
            api.exec_inspect(pending)
        assert api.exec_inspect(ran)["ExitCode"] == 3
        engine.docker("start", "exec-run-ends")
        stale = api.exec_create("exec-run-ends", ["true"])["Id"]
        engine.docker("restart", "-t", "0", "exec-run-ends")
        assert api.inspect_container("exec-run-ends")["ExecIDs"] is None
        with pytest.raises(docker.errors.NotFound):
            api.exec_start(stale, detach=True)
    finally:
        engine.docker("rm", "-f", "exec-run-ends", check=False)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("demux", [False, True])
def test_sdk_tty_exec_is_one_raw_stream(engine: Engine, box: str, stream: bool,
                                        demux: bool) -> None:
    """With a TTY, output is the terminal's raw bytes (no stream headers, no
    stderr of its own) for every stream/demux combination a client asks."""
    container = engine.client().containers.get(box)
    result = container.exec_run(["sh", "-c", "echo out; echo err >&2"], tty=True,
                                stream=stream, demux=demux)
    chunks = list(result.output) if stream else [result.output]
    if demux:
        assert all(err is None for _, err in chunks)
        chunks = [out for out, _ in chunks]
    assert b"".join(chunks) == b"out\r\nerr\r\n"
