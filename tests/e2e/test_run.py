"""`docker run` end to end with the real docker CLI: output, exit codes,
stdin, errors with Docker's messages, and the interactive TTY flow."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pexpect
import pytest

from tests.support.engine import DOCKER_CLI, Engine
from tests.support.images import busybox_rootfs_tar

pytestmark = pytest.mark.usefixtures("no_leftovers")

PROMPT = "/ # "
CTRL_P, CTRL_Q = "\x10", "\x11"


def container_ids(engine: Engine, *args: str) -> list[str]:
    return engine.docker("ps", "-q", "--no-trunc", *args).stdout.decode().split()


def spawn(engine: Engine, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(DOCKER_CLI, list(args), env=engine.env(), timeout=30,
                          encoding="utf-8", dimensions=(24, 80))
    return child


def wait_for_state(engine: Engine, name: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = engine.docker("inspect", "-f", "{{.State.Status}}", name).stdout.decode().strip()
        if state == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} is {state!r}, not {status!r}")


def test_run_prints_output_and_removes_the_container(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "echo", "hi")
    assert result.stdout == b"hi\n"
    assert container_ids(engine, "-a") == []


def test_the_environment_docker_gives(engine: Engine, busybox: str) -> None:
    plain = engine.docker("run", "--name", "env-plain", busybox, "env").stdout.decode()
    short_id = engine.docker("inspect", "-f", "{{.Id}}", "env-plain").stdout.decode()[:12]
    engine.docker("rm", "env-plain")
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert plain.splitlines() == [path, f"HOSTNAME={short_id}", "HOME=/root"]
    tty = engine.docker("run", "--rm", "-t", "-e", "HOSTNAME=mine", busybox, "env").stdout
    assert tty.decode().splitlines()[1:3] == ["HOSTNAME=mine", "TERM=xterm"]
    # A name without a value that the client has not set either stays unset.
    unset = engine.docker("run", "--rm", "-e", "BERTH_NOT_SET_ANYWHERE", busybox, "sh", "-c",
                          "echo ${BERTH_NOT_SET_ANYWHERE-unset}")
    assert unset.stdout == b"unset\n"


def test_default_path_is_the_processes_not_the_configs(engine: Engine,
                                                       tmp_path: Path) -> None:
    """As dockerd: an image without Env (imported) gives a container whose
    Config.Env stays null; only its processes get Docker's default PATH."""
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(busybox_rootfs_tar())
    engine.docker("import", str(archive), "run-noenv:1")
    try:
        plain = engine.docker("run", "--name", "run-noenv", "run-noenv:1", "env").stdout
        assert plain.decode().splitlines()[0] == \
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env = engine.docker("inspect", "-f", "{{json .Config.Env}}", "run-noenv").stdout
        assert json.loads(env) is None
        engine.docker("start", "run-noenv")
        wait_for_state(engine, "run-noenv", "exited")
        engine.docker("commit", "run-noenv", "run-noenv:committed")
        committed = engine.docker("image", "inspect", "-f", "{{json .Config.Env}}",
                                  "run-noenv:committed").stdout
        assert json.loads(committed) is None
    finally:
        engine.docker("rm", "-f", "run-noenv", check=False)
        engine.docker("rmi", "run-noenv:committed", "run-noenv:1", check=False)


def test_a_volume_on_etc_keeps_the_engines_network_files(engine: Engine,
                                                          busybox: str) -> None:
    """As dockerd, which mounts by depth: /etc first, then /etc/hosts,
    /etc/hostname and /etc/resolv.conf over it."""
    try:
        out = engine.docker("run", "--rm", "--hostname", "over-etc", "-v", "run-etc:/etc",
                            busybox, "sh", "-c",
                            "cat /etc/hostname; grep -c over-etc /etc/hosts; "
                            "grep -c nameserver /etc/resolv.conf").stdout.decode()
        assert out.split() == ["over-etc", "1", "1"], out
    finally:
        engine.docker("volume", "rm", "run-etc", check=False)


def test_exit_code_propagates(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "sh", "-c", "echo out; echo err >&2; exit 3",
                           check=False)
    assert result.returncode == 3
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"


def test_stdin_flows_until_the_client_closes_it(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "-i", "--rm", busybox, "sh", "-c", "cat; echo done",
                           input=b"hello\nworld\n")
    assert result.stdout == b"hello\nworld\ndone\n"


def test_large_streams_both_ways(engine: Engine, busybox: str) -> None:
    data = os.urandom(8 * 1024 * 1024)
    result = engine.docker("run", "-i", "--rm", busybox, "md5sum", input=data)
    assert result.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    result = engine.docker("run", "--rm", busybox, "sh", "-c", "head -c 8000000 /dev/zero")
    assert result.stdout == bytes(8_000_000)


def test_detached_run_keeps_running(engine: Engine, busybox: str) -> None:
    cid = engine.docker("run", "-d", "--name", "sleeper", busybox, "sleep", "300"
                        ).stdout.decode().strip()
    assert len(cid) == 64
    assert cid in container_ids(engine)
    engine.docker("rm", "-f", "sleeper")
    assert cid not in container_ids(engine, "-a")


def test_missing_command_is_127(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "no-such-command", check=False)
    assert result.returncode == 127
    assert b'exec: "no-such-command": executable file not found in $PATH' in result.stderr


def test_non_executable_file_is_126(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--rm", busybox, "/etc/passwd", check=False)
    assert result.returncode == 126
    assert b"permission denied" in result.stderr


def test_unknown_image(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--rm", "--pull", "never", "no-such-image", check=False)
    assert result.returncode == 125
    assert b"No such image: no-such-image:latest" in result.stderr


def test_name_conflict(engine: Engine, busybox: str) -> None:
    cid = engine.docker("create", "--name", "taken", busybox).stdout.decode().strip()
    result = engine.docker("create", "--name", "taken", busybox, check=False)
    assert result.returncode == 1
    assert (f'Conflict. The container name "/taken" is already in use by container "{cid}". '
            "You have to remove (or rename) that container to be able to reuse that name."
            ).encode() in result.stderr
    engine.docker("rm", "taken")


def test_interactive_shell(engine: Engine, busybox: str) -> None:
    child = spawn(engine, "run", "-it", "--rm", busybox, "sh")
    child.expect_exact(PROMPT)
    child.sendline("echo $((6*7))")
    child.expect_exact("42")
    child.expect_exact(PROMPT)
    child.sendline("exit 3")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert container_ids(engine, "-a") == []


def test_tty_size_follows_the_terminal(engine: Engine, busybox: str) -> None:
    child = spawn(engine, "run", "-it", "--rm", busybox, "sh")
    child.expect_exact(PROMPT)
    child.sendline("stty size")
    child.expect_exact("24 80")
    child.setwinsize(30, 100)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        child.sendline("stty size")
        if child.expect_exact(["30 100", PROMPT]) == 0:
            break
    else:
        raise AssertionError("the container's terminal was not resized")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()


def test_tty_without_stdin_is_a_raw_stream(engine: Engine, busybox: str) -> None:
    assert engine.docker("run", "-t", "--rm", busybox, "echo", "hi").stdout == b"hi\r\n"


def test_start_attach_reattaches_a_stopped_shell(engine: Engine, busybox: str) -> None:
    child = spawn(engine, "run", "-it", "--name", "again", busybox, "sh")
    child.expect_exact(PROMPT)
    child.sendline("exit 4")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    wait_for_state(engine, "again", "exited")
    child = spawn(engine, "start", "-ai", "again")
    child.expect_exact(PROMPT)
    child.sendline("echo back-$((1+1))")
    child.expect_exact("back-2")
    child.sendline("exit 5")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5
    engine.docker("rm", "again")


def test_detach_keys_leave_the_container_running(engine: Engine, busybox: str) -> None:
    child = spawn(engine, "run", "-it", "--name", "detached", busybox, "sh")
    child.expect_exact(PROMPT)
    child.send(CTRL_P + CTRL_Q)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    wait_for_state(engine, "detached", "running")
    child = spawn(engine, "attach", "detached")
    child.sendline("echo still-$((2*3))")
    child.expect_exact("still-6")
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    wait_for_state(engine, "detached", "exited")
    engine.docker("rm", "detached")


def test_detach_keys_from_the_client_config(engine: Engine, busybox: str) -> None:
    """The CLI sends config.json's detachKeys; attach and exec honour them."""
    config = Path(engine.env()["DOCKER_CONFIG"])
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.json").write_text(json.dumps({"detachKeys": "ctrl-x,x"}))
    try:
        engine.docker("run", "-dit", "--name", "keyed", busybox, "sh")
        for args in (("attach", "keyed"), ("exec", "-it", "keyed", "sh")):
            child = spawn(engine, *args)
            child.sendline("echo in-$((6*7))")
            child.expect_exact("in-42")
            child.send(CTRL_P + CTRL_Q)   # not the configured keys: still attached
            child.sendline("echo still-$((2*3))")
            child.expect_exact("still-6")
            child.send("\x18x")
            child.expect_exact("read escape sequence")
            child.expect(pexpect.EOF)
            child.close()
            wait_for_state(engine, "keyed", "running")
    finally:
        (config / "config.json").unlink()
        engine.docker("rm", "-f", "keyed")
