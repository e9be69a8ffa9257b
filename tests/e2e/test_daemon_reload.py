"""SIGHUP to `berth up` reloads the engine config file as dockerd does:
Labels, Debug and the registry settings change in /info, a newly insecure
registry works for pull at once, and one `daemon reload` event reports the
new settings; an invalid file changes nothing and sends no event.

The engine runs in a network namespace of its own (host A), the registry in
another (host B), so the registry's address is not a loopback one: loopback
registries are always insecure. Debian's dockerd 20.10, reloaded with the
same file, is the reference for the event's attributes and /info.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import Engine, running_engine, unmount_below
from tests.support.hosts import Host, two_hosts
from tests.support.polling import wait_for
from tests.support.registry import REGISTRY_BIN, SKOPEO, registry_config

# A /30 used only on the veth pair between the test's own two namespaces.
SUBNET = "10.231.23"
REGISTRY_PORT = 5000
DOCKERD = "/usr/sbin/dockerd"
# The settings both engines are reloaded with (live-restore: berth always
# restores, so dockerd is told to as well).
SHARED_SETTINGS = {
    "labels": ["tier=two", "zone=b"], "debug": True, "live-restore": True,
    "insecure-registries": ["10.99.0.0/16", "myreg:5000"],
    "registry-mirrors": ["https://mirror.example"], "max-concurrent-downloads": 4}


def docker_time(nanos: int) -> str:
    """A time as Docker's `since` and `until` take it: seconds.nanoseconds."""
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


@dataclass
class Reloading:
    """The engine of this module and its config file."""

    engine: Engine
    config: Path

    def reload(self, document: dict[str, Any] | str) -> str:
        """Write the config file and SIGHUP `berth up`; the time before."""
        since = docker_time(time.time_ns())
        text = document if isinstance(document, str) else json.dumps(document)
        self.config.write_text(text)
        assert self.engine.process is not None
        os.kill(self.engine.process.pid, signal.SIGHUP)
        return since

    def reload_event(self, since: str) -> dict[str, Any]:
        """The first daemon event since `since` (the SDK follows live ones)."""
        stream = self.engine.client().events(since=since, filters={"type": "daemon"},
                                             decode=True)
        try:
            return next(stream)
        finally:
            stream.close()

    def daemon_events(self, since: str, *filters: str) -> list[dict[str, Any]]:
        """The events from `since` until now, through the docker CLI."""
        args = ["events", "--since", since, "--until", docker_time(time.time_ns()),
                "--format", "{{json .}}"]
        for expression in filters:
            args += ["--filter", expression]
        out = self.engine.docker(*args).stdout.decode()
        return [json.loads(line) for line in out.splitlines()]

    def refusals(self) -> int:
        return self.engine.logs().count("keeping the previous configuration")


@contextlib.contextmanager
def running_dockerd(config: Path) -> Iterator[Reloading]:
    """Debian's dockerd on its own roots and socket, with no bridge or
    iptables rules, stopped by its PID."""
    root = Path(tempfile.mkdtemp(prefix="berth-dockerd-"))
    engine = Engine(root)
    with engine.log_path.open("ab") as log:
        engine.process = subprocess.Popen(
            [DOCKERD, "-H", engine.host, "--data-root", str(engine.data_root),
             "--exec-root", str(engine.exec_root), "--pidfile", str(root / "dockerd.pid"),
             "--config-file", str(config), "--bridge", "none", "--iptables=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: engine.docker("version", check=False).returncode == 0, timeout=60,
                 message="dockerd")
        yield Reloading(engine, config)
    finally:
        engine.stop()
        unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Host, Host]]:
    with two_hosts(SUBNET) as pair:
        yield pair


@pytest.fixture(scope="module")
def reloading(hosts: tuple[Host, Host]) -> Iterator[Reloading]:
    host_a, _ = hosts
    work = Path(tempfile.mkdtemp(prefix="berth-reload-"))
    config = work / "engine.json"
    config.write_text(json.dumps({"labels": ["tier=one"]}))
    try:
        with running_engine(args=("--config", str(config)),
                            wrapper=tuple(host_a.enter())) as engine:
            yield Reloading(engine, config)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def remote_registry(hosts: tuple[Host, Host], busybox_tar: Path) -> Iterator[str]:
    """docker-registry on host B, holding reload/busybox:latest."""
    _, host_b = hosts
    root = Path(tempfile.mkdtemp(prefix="berth-registry-"))
    address = f"{host_b.address}:{REGISTRY_PORT}"
    (root / "config.yml").write_text(registry_config(address, root / "storage"))
    host_b.start([REGISTRY_BIN, "serve", str(root / "config.yml")], root / "registry.log")

    def seeded() -> bool:
        copy = [*host_b.enter(), SKOPEO, "copy", "--quiet", "--dest-tls-verify=false",
                f"docker-archive:{busybox_tar}", f"docker://{address}/reload/busybox:latest"]
        return subprocess.run(copy, capture_output=True, timeout=120).returncode == 0
    wait_for(seeded, timeout=60, message="the registry on host B")
    try:
        yield address
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_reload_changes_info_and_sends_one_daemon_event(reloading: Reloading) -> None:
    engine = reloading.engine
    before = engine.client().info()
    assert before["Labels"] == ["tier=one"] and before["Debug"] is False

    since = reloading.reload(SHARED_SETTINGS)
    event = reloading.reload_event(since)

    assert event["Type"] == "daemon" and event["Action"] == "reload"
    assert event["Actor"]["ID"] == before["ID"]
    attributes = event["Actor"]["Attributes"]
    assert attributes["name"] == before["Name"]
    assert attributes["labels"] == '["tier=two","zone=b"]'
    assert attributes["debug"] == "true"
    assert attributes["insecure-registries"] == '["10.99.0.0/16","myreg:5000"]'
    assert attributes["registry-mirrors"] == '["https://mirror.example"]'
    assert attributes["max-concurrent-downloads"] == "4"
    assert attributes["max-concurrent-uploads"] == "5"
    assert attributes["live-restore"] == "true"
    assert attributes["default-runtime"] == "runc"
    # One event for the reload, from the container service alone.
    assert len(reloading.daemon_events(since, "type=daemon")) == 1

    info = engine.client().info()
    assert info["Labels"] == ["tier=two", "zone=b"]
    assert info["Debug"] is True
    registries = info["RegistryConfig"]
    assert registries["InsecureRegistryCIDRs"][0] == "10.99.0.0/16"
    assert registries["IndexConfigs"]["myreg:5000"]["Secure"] is False
    assert registries["Mirrors"] == ["https://mirror.example/"]
    shown = engine.docker("info", "--format", "{{json .Labels}} {{.Debug}}").stdout
    assert shown.decode().strip() == '["tier=two","zone=b"] true'


def test_daemon_filter_matches_the_daemon_name_or_id(reloading: Reloading) -> None:
    info = reloading.engine.client().info()
    since = reloading.reload({"labels": ["filter=1"]})
    assert reloading.reload_event(since)["Actor"]["Attributes"]["labels"] == '["filter=1"]'

    for value in (info["Name"], info["ID"], info["ID"][:4]):
        found = reloading.daemon_events(since, f"daemon={value}")
        assert [(e["Type"], e["Action"]) for e in found] == [("daemon", "reload")]
    assert reloading.daemon_events(since, "daemon=no-such-daemon") == []
    assert reloading.daemon_events(since, "type=container") == []
    assert len(reloading.daemon_events(since, "type=daemon", "event=reload")) == 1
    stream = reloading.engine.client().events(
        since=since, until=docker_time(time.time_ns()), decode=True,
        filters={"daemon": info["ID"], "event": "reload"})
    assert [e["Actor"]["ID"] for e in stream] == [info["ID"]]


@pytest.mark.parametrize(("document", "error"), [
    ('{"labels": ["bad=json"], ', "unable to configure the engine with file"),
    ({"labels": ["nokey"]}, "bad attribute format: nokey"),
    ({"labels": ["x=1"], "max-concurrent-downloads": -1}, "invalid max concurrent downloads: -1"),
])
def test_an_invalid_file_is_refused_and_changes_nothing(
        reloading: Reloading, document: dict[str, Any] | str, error: str) -> None:
    before = reloading.engine.client().info()
    refused = reloading.refusals()
    since = reloading.reload(document)
    wait_for(lambda: reloading.refusals() > refused, message="the refused reload")
    assert error in reloading.engine.logs()
    after = reloading.engine.client().info()
    for key in ("Labels", "Debug", "RegistryConfig"):
        assert after[key] == before[key]

    reloading.reload({"labels": ["valid=again"]})
    event = reloading.reload_event(since)
    assert event["Actor"]["Attributes"]["labels"] == '["valid=again"]'
    assert len(reloading.daemon_events(since, "type=daemon")) == 1


def test_a_newly_insecure_registry_works_for_pull_without_restart(
        reloading: Reloading, remote_registry: str) -> None:
    image = f"{remote_registry}/reload/busybox:latest"
    refused = reloading.engine.docker("pull", image, check=False)
    assert refused.returncode != 0 and b"https://" in refused.stderr

    since = reloading.reload({"insecure-registries": [remote_registry]})
    reloading.reload_event(since)
    assert b"Downloaded newer image" in reloading.engine.docker("pull", image).stdout
    index = reloading.engine.client().info()["RegistryConfig"]["IndexConfigs"]
    assert index[remote_registry]["Secure"] is False
    reloading.engine.docker("rmi", image)


@pytest.mark.skipif(not Path(DOCKERD).exists(), reason="needs Debian's dockerd")
def test_event_and_info_match_dockerd(reloading: Reloading, tmp_path: Path) -> None:
    since = reloading.reload(SHARED_SETTINGS)
    berth_event = reloading.reload_event(since)
    berth_info = reloading.engine.client().info()
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"labels": ["tier=one"]}))
    with running_dockerd(config) as dockerd:
        since = dockerd.reload(SHARED_SETTINGS)
        docker_event = dockerd.reload_event(since)
        docker_info = dockerd.engine.client().info()
    assert docker_event["Actor"]["ID"] == docker_info["ID"]
    berth_attributes = berth_event["Actor"]["Attributes"]
    docker_attributes = docker_event["Actor"]["Attributes"]
    assert berth_attributes.keys() <= docker_attributes.keys()
    # dockerd's labels come out of a Go map (GetConflictFreeLabels): in any order.
    assert sorted(json.loads(berth_attributes["labels"])) == sorted(
        json.loads(docker_attributes["labels"]))
    assert sorted(berth_info["Labels"]) == sorted(docker_info["Labels"])
    for key in berth_attributes.keys() - {"runtimes", "labels"}:  # runtime paths differ
        assert berth_attributes[key] == docker_attributes[key], key
    assert berth_info["Debug"] == docker_info["Debug"]
    for key in ("IndexConfigs", "Mirrors"):
        assert berth_info["RegistryConfig"][key] == docker_info["RegistryConfig"][key]
    assert (berth_info["RegistryConfig"]["InsecureRegistryCIDRs"][0]
            == docker_info["RegistryConfig"]["InsecureRegistryCIDRs"][0])
