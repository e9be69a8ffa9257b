"""The journald log driver against a real journal: a private systemd-journald
(tests/support/journal.py) with the engine started in its mount namespace.
`journalctl -D` reads what the containers logged; Debian's dockerd 20.10,
started in the same namespace, is the reference for the fields."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import Engine, running_engine, unmount_below
from tests.support.journal import JOURNALD, PrivateJournal, private_journal
from tests.support.polling import wait_for

DOCKERD = Path("/usr/sbin/dockerd")
# Fields of the entry that journald itself adds (trusted `_*`, addresses
# `__*`), and those Docker writes since 23.0 that 20.10 does not.
NEWER_THAN_20_10 = {"SYSLOG_TIMESTAMP", "CONTAINER_LOG_EPOCH", "CONTAINER_LOG_ORDINAL"}
RUN_OPTIONS = ("--log-driver", "journald", "--label", "a.b=x y", "--label", "com.example-k=2",
               "-e", "B_x=2", "--log-opt", "labels=a.b,com.example-k,missing",
               "--log-opt", "env=B_x", "--log-opt", "tag={{.Name}}/{{.ID}}")

pytestmark = pytest.mark.skipif(not JOURNALD.exists(), reason="systemd-journald is not installed")


@pytest.fixture(scope="module")
def journal() -> Iterator[PrivateJournal]:
    with private_journal() as running:
        yield running


@pytest.fixture(scope="module")
def engine(journal: PrivateJournal) -> Iterator[Engine]:
    with running_engine(wrapper=tuple(journal.enter())) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leftovers(engine: Engine) -> Iterator[None]:
    yield
    ids = engine.docker("ps", "-aq").stdout.decode().split()
    if ids:
        engine.docker("rm", "-f", *ids, check=False)


def container_id(engine: Engine, name: str) -> str:
    return engine.docker("inspect", "-f", "{{.Id}}", name).stdout.decode().strip()


def docker_fields(entry: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in entry.items() if not key.startswith("_")}


def test_entries_carry_dockers_fields(engine: Engine, busybox: str,
                                      journal: PrivateJournal) -> None:
    engine.docker("run", "--name", "jour", *RUN_OPTIONS, busybox, "sh", "-c",
                  "echo out; echo; echo err >&2; printf 'multi\\nline'")
    cid = container_id(engine, "jour")
    entries = [docker_fields(e) for e in journal.entries(f"CONTAINER_ID_FULL={cid}")]
    by_message = {entry["MESSAGE"]: entry for entry in entries}
    assert sorted(by_message) == ["", "err", "line", "multi", "out"]
    tag = f"jour/{cid[:12]}"
    common = {"CONTAINER_ID": cid[:12], "CONTAINER_ID_FULL": cid, "CONTAINER_NAME": "jour",
              "CONTAINER_TAG": tag, "SYSLOG_IDENTIFIER": tag, "IMAGE_NAME": busybox,
              "A_B": "x y", "COM_EXAMPLE_K": "2", "B_X": "2"}
    for entry in entries:
        assert entry.items() >= common.items(), entry
        assert entry["CONTAINER_LOG_EPOCH"] == entries[0]["CONTAINER_LOG_EPOCH"]
        assert entry["SYSLOG_TIMESTAMP"].endswith("Z")
    assert sorted(int(e["CONTAINER_LOG_ORDINAL"]) for e in entries) == [1, 2, 3, 4, 5]
    assert {m: e["PRIORITY"] for m, e in by_message.items()} == {
        "out": "6", "": "6", "multi": "6", "line": "6", "err": "3"}
    assert not any(key.startswith("CONTAINER_PARTIAL") for key in by_message["out"])
    assert by_message["line"]["CONTAINER_PARTIAL_MESSAGE"] == "true"
    assert by_message["line"]["CONTAINER_PARTIAL_LAST"] == "false"


def test_docker_logs_reads_the_lines_back(engine: Engine, busybox: str) -> None:
    engine.docker("run", "--name", "back", *RUN_OPTIONS, busybox, "sh", "-c",
                  "echo out; echo; echo err >&2; printf 'multi\\nline'")
    logs = engine.docker("logs", "back")
    assert (logs.stdout, logs.stderr) == (b"out\n\nmulti\nline", b"err\n")
    details = engine.docker("logs", "--details", "back")
    assert details.stdout.splitlines()[0] == b"A_B=x+y,B_X=2,COM_EXAMPLE_K=2 out"


def test_a_long_line_goes_as_partial_messages(engine: Engine, busybox: str,
                                              journal: PrivateJournal) -> None:
    engine.docker("run", "--name", "long", "--log-driver", "journald", busybox, "sh", "-c",
                  "head -c 40000 /dev/zero | tr '\\0' x; echo")
    cid = container_id(engine, "long")
    entries = journal.entries(f"CONTAINER_ID_FULL={cid}")
    assert [len(e["MESSAGE"]) for e in entries] == [16384, 16384, 7232]
    assert [e["CONTAINER_PARTIAL_LAST"] for e in entries] == ["false", "false", "true"]
    assert [e.get("CONTAINER_PARTIAL_MESSAGE") for e in entries] == ["true", "true", None]
    assert engine.docker("logs", "long").stdout == b"x" * 40000 + b"\n"


@contextlib.contextmanager
def running_dockerd(journal: PrivateJournal) -> Iterator[Engine]:
    """Debian's dockerd in the journal's namespace, on its own roots and
    socket, with no bridge or iptables rules, stopped by its PID."""
    root = Path(tempfile.mkdtemp(prefix="berth-dockerd-"))
    dockerd = Engine(root)
    with dockerd.log_path.open("ab") as log:
        dockerd.process = subprocess.Popen(
            [*journal.enter(), str(DOCKERD), "-H", dockerd.host, "--data-root",
             str(dockerd.data_root), "--exec-root", str(dockerd.exec_root),
             "--pidfile", str(root / "dockerd.pid"), "--bridge", "none", "--iptables=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: dockerd.docker("version", check=False).returncode == 0, timeout=60,
                 message="dockerd")
        yield dockerd
    finally:
        dockerd.clean()
        dockerd.stop()
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def comparable(entries: list[dict[str, str]], cid: str) -> list[dict[str, str]]:
    """The entries' Docker fields, IDs replaced, in message order."""
    shown = []
    for entry in entries:
        fields = {k: v.replace(cid, "<id>").replace(cid[:12], "<id>")
                  for k, v in docker_fields(entry).items() if k not in NEWER_THAN_20_10}
        fields.pop("CONTAINER_PARTIAL_ID", None)
        shown.append(fields)
    return sorted(shown, key=lambda fields: (fields["MESSAGE"], fields["PRIORITY"]))


@pytest.mark.skipif(not DOCKERD.exists(), reason="needs Debian's dockerd")
def test_fields_and_logs_match_dockerd(engine: Engine, busybox: str, busybox_tar: Path,
                                       journal: PrivateJournal) -> None:
    script = "echo out; echo err >&2; echo two words; printf 'multi\\nline'"
    results = {}
    with running_dockerd(journal) as dockerd:
        dockerd.docker("load", "-i", str(busybox_tar))
        for name, daemon in (("berth", engine), ("dockerd", dockerd)):
            daemon.docker("run", "--name", name, *RUN_OPTIONS, busybox, "sh", "-c", script)
            cid = container_id(daemon, name)
            logs = daemon.docker("logs", name)
            entries = journal.entries(f"CONTAINER_ID_FULL={cid}")
            rows = [{**e, "CONTAINER_NAME": e["CONTAINER_NAME"].replace(name, "<name>"),
                     "CONTAINER_TAG": e["CONTAINER_TAG"].replace(name, "<name>"),
                     "SYSLOG_IDENTIFIER": e["SYSLOG_IDENTIFIER"].replace(name, "<name>")}
                    for e in entries]
            results[name] = (comparable(rows, cid), logs.stdout, logs.stderr)
    assert results["berth"] == results["dockerd"], json.dumps(results, default=repr, indent=1)
