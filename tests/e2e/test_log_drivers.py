"""Log drivers through the docker CLI and the SDK: Docker's create-time
checks, json-file rotation with compression, local, none, syslog to
listeners of the test's own (udp, tcp, unix), and journald's refusal where
the host has no journal (test_log_journald.py runs one of its own)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.engine import Engine

pytestmark = pytest.mark.usefixtures("no_leftovers")

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


def container_dir(engine: Engine, name: str) -> Path:
    cid = engine.docker("inspect", "-f", "{{.Id}}", name).stdout.decode().strip()
    return engine.data_root / "container" / "containers" / cid


def refused(engine: Engine, *args: str) -> str:
    result = engine.docker("create", *args, check=False)
    assert result.returncode != 0
    return result.stderr.decode()


def test_create_refuses_what_docker_refuses(engine: Engine, busybox: str) -> None:
    assert "logger: no log driver named 'gelfish' is registered" in refused(
        engine, "--log-driver", "gelfish", busybox)
    assert "logger: no log driver named 'k8s-file' is registered" in refused(
        engine, "--log-driver", "k8s-file", "--log-opt", "path=/tmp/x", busybox)
    assert "unknown log opt 'color' for json-file log driver" in refused(
        engine, "--log-opt", "color=red", busybox)
    assert "unknown log opt 'syslog-address' for log driver local" in refused(
        engine, "--log-driver", "local", "--log-opt", "syslog-address=udp://x", busybox)
    assert "compress cannot be true when max-file is less than 2 or max-size is not set" in \
        refused(engine, "--log-opt", "compress=true", "--log-opt", "max-file=3", busybox)
    assert "compression cannot be enabled when max file count is 1" in refused(
        engine, "--log-driver", "local", "--log-opt", "max-file=1", busybox)
    assert "Invalid syslog format" in refused(
        engine, "--log-driver", "syslog", "--log-opt", "syslog-format=json", busybox)
    assert "invalid syslog facility" in refused(
        engine, "--log-driver", "syslog", "--log-opt", "syslog-facility=nope", busybox)
    assert "unsupported scheme: 'http'" in refused(
        engine, "--log-driver", "syslog", "--log-opt", "syslog-address=http://x", busybox)
    with pytest.raises(docker.errors.APIError) as caught:
        engine.client().containers.create(
            busybox, log_config=docker.types.LogConfig(type="gelfish"))
    assert caught.value.status_code == 400


def test_json_file_rotates_and_compresses(engine: Engine, busybox: str) -> None:
    # Four bursts of 12 KiB, a pause between them longer than the rotation check.
    script = ("for burst in 1 2 3 4; do i=0; while [ $i -lt 120 ]; do "
              "printf 'burst%s line%03d %0080d\\n' $burst $i 0; i=$((i+1)); done; "
              "sleep 1.5; done")
    engine.docker("run", "--name", "rot", "--log-opt", "max-size=10k", "--log-opt",
                  "max-file=3", "--log-opt", "compress=true", "--log-opt", "labels=a",
                  "--log-opt", "env=B", "--log-opt", "tag={{.Name}}", busybox, "sh", "-c",
                  script, timeout=60)
    files = sorted(p.name for p in container_dir(engine, "rot").glob("container.log*"))
    assert files == ["container.log", "container.log.1.gz", "container.log.2.gz"]
    lines = engine.docker("logs", "rot").stdout.decode().splitlines()
    assert lines[-1].startswith("burst4 line119")
    assert not lines[0].startswith("burst1 ")
    config = json.loads(engine.docker("inspect", "rot").stdout)[0]["HostConfig"]["LogConfig"]
    assert config == {"Type": "json-file", "Config": {
        "max-size": "10k", "max-file": "3", "compress": "true", "labels": "a", "env": "B",
        "tag": "{{.Name}}"}}


def test_details_show_labels_env_and_tag(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "detailed", "--label", "a=x y", "--label", "other=1",
                  "-e", "B=2", "-e", "C=3", "--log-opt", "labels=a,missing",
                  "--log-opt", "env=B", "--log-opt", "tag={{.Name}}", busybox, "echo", "hi")
    assert engine.docker("logs", "--details", "detailed").stdout == \
        b"B=2,a=x+y,tag=detailed hi\n"
    engine.docker("run", "--name", "plain-details", "--log-driver", "local",
                  "-e", "B=2", "--log-opt", "env-regex=^B$", busybox, "echo", "hi")
    assert engine.docker("logs", "--details", "plain-details").stdout == b"B=2 hi\n"
    engine.docker("run", "--name", "no-details", busybox, "echo", "hi")
    assert engine.docker("logs", "--details", "no-details").stdout == b" hi\n"


def test_local_is_read_back_and_none_is_not(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "loc", "--log-driver", "local", busybox, "sh", "-c",
                  "echo out; echo err >&2")
    logs = engine.docker("logs", "loc")
    assert (logs.stdout, logs.stderr) == (b"out\n", b"err\n")
    attached = engine.docker("run", "--name", "mute", "--log-driver", "none", busybox,
                             "echo", "x")
    assert attached.stdout == b"x\n"
    result = engine.docker("logs", "mute", check=False)
    assert result.returncode != 0
    assert b"configured logging driver does not support reading" in result.stderr
    assert not list(container_dir(engine, "mute").glob("container.log*"))


def test_output_no_newline_ended_is_read_back(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "unended", busybox, "sh", "-c",
                  "echo first; printf second; printf third >&2")
    logs = engine.docker("logs", "unended")
    assert (logs.stdout, logs.stderr) == (b"first\nsecond", b"third")


@pytest.fixture
def udp_listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(30)
        yield sock


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.settimeout(30)
        yield sock


RFC5424 = re.compile(rb"<(\d+)>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-Z][0-9:]* (\S+) "
                     rb"(\S+) (\d+) (\S+) - (.*)\n")


def test_syslog_udp_rfc5424(engine: Engine, busybox: str, udp_listener: socket.socket) -> None:
    port = udp_listener.getsockname()[1]
    engine.docker("run", "--name", "sys-udp", "--log-driver", "syslog",
                  "--log-opt", f"syslog-address=udp://127.0.0.1:{port}",
                  "--log-opt", "syslog-format=rfc5424", "--log-opt", "tag=web-{{.Name}}",
                  "--log-opt", "syslog-facility=local0", busybox, "sh", "-c",
                  "echo hello; echo oops >&2")
    messages = [RFC5424.fullmatch(udp_listener.recv(4096)) for _ in range(2)]
    assert all(messages), messages
    by_text = {m.group(6): m for m in messages}
    assert by_text[b"hello"].group(1) == b"134"      # local0 (16 << 3) | info (6)
    assert by_text[b"oops"].group(1) == b"131"       # local0 | err (3)
    assert by_text[b"hello"].group(3) == by_text[b"hello"].group(5) == b"web-sys-udp"
    # Docker's dual logging: the lines are read back from the local cache.
    assert engine.docker("logs", "sys-udp").stdout == b"hello\n"


def test_syslog_tcp_default_tag(engine: Engine, busybox: str,
                                tcp_listener: socket.socket) -> None:
    port = tcp_listener.getsockname()[1]
    engine.docker("run", "-d", "--name", "sys-tcp", "--log-driver", "syslog",
                  "--log-opt", f"syslog-address=tcp://127.0.0.1:{port}",
                  "--log-opt", "syslog-format=rfc5424", busybox, "sh", "-c",
                  "echo first; echo second")
    short_id = engine.docker("inspect", "-f", "{{.Id}}", "sys-tcp").stdout.decode()[:12]
    connection, _ = tcp_listener.accept()
    with connection:
        connection.settimeout(30)
        received = b""
        while received.count(b"\n") < 2:
            chunk = connection.recv(4096)
            assert chunk, received
            received += chunk
    first, second = (RFC5424.fullmatch(line + b"\n") for line in received.splitlines())
    assert (first.group(1), first.group(3), first.group(6)) == (
        b"30", short_id.encode(), b"first")     # daemon (3 << 3) | info
    assert second.group(6) == b"second"


def test_syslog_unix_socket(engine: Engine, busybox: str, tmp_path: Path) -> None:
    path = tmp_path / "syslog.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(30)
        engine.docker("run", "--name", "sys-unix", "--log-driver", "syslog",
                      "--log-opt", f"syslog-address=unixgram://{path}",
                      "--log-opt", "tag=box", busybox, "echo", "via unix")
        message = listener.recv(4096)
    assert re.fullmatch(rb"<30>\w{3} [ \d]\d \d\d:\d\d:\d\d box\[\d+\]: via unix\n", message)


def test_syslog_unreachable_fails_the_start(engine: Engine, busybox: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = engine.docker("run", "--name", "sys-down", "--log-driver", "syslog",
                           "--log-opt", f"syslog-address=tcp://127.0.0.1:{port}", busybox,
                           "true", check=False)
    assert result.returncode != 0
    assert b"failed to initialize logging driver" in result.stderr
    state = json.loads(engine.docker("inspect", "sys-down").stdout)[0]["State"]
    assert state["Status"] == "created" and "logging driver" in state["Error"]


@pytest.mark.skipif(JOURNAL_SOCKET.exists(), reason="this host has a systemd journal")
def test_journald_without_a_journal_fails_the_start(engine: Engine, busybox: str) -> None:
    result = engine.docker("run", "--name", "jour", "--log-driver", "journald", busybox,
                           "true", check=False)
    assert result.returncode != 0
    assert b"journald is not enabled on this host" in result.stderr
