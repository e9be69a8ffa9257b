"""deploy/multi-host/README.md holds: the build service and the gateway run on
another host than the image, container, network and volume services.

Host A (a network namespace) runs the four state-holding services on
mutual-TLS tcp://. Host B (its own network and mount namespace) runs the
build service and the gateway on private tmpfs roots, with host A's roots
hidden under a tmpfs, so nothing on B can read A's files: image content,
host facts and everything else reach B over gRPC only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.engine import BERTH, DOCKER_CLI, purge_instance, unmount_below
from tests.support.hosts import Host, two_hosts
from tests.support.polling import wait_for
from tests.support.tls import Certs, make_certs

# A /30 used only on the veth pair between the test's own two namespaces.
SUBNET = "10.231.17"
PORTS = {"image": 7001, "volume": 7002, "network": 7003, "container": 7004}
DOCKER_PORT = 2376


@dataclass
class Placement:
    a: Host
    b: Host
    a_root: Path
    b_root: Path
    certs: Certs
    docker_config: Path

    def docker(self, *args: str, over_tls: bool = False, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess:
        """The docker CLI on host B, against B's gateway: on its socket, or
        `over_tls` on its TCP port."""
        if over_tls:
            target = ["--tlsverify", "--tlscacert", str(self.certs.ca), "--tlscert",
                      str(self.certs.cert), "--tlskey", str(self.certs.key),
                      "-H", f"tcp://{self.b.address}:{DOCKER_PORT}"]
        else:
            target = ["-H", f"unix://{self.b_root}/run/docker.sock"]
        result = subprocess.run(
            [*self.b.enter(), DOCKER_CLI, "--config", str(self.docker_config), *target, *args],
            capture_output=True, timeout=timeout,
            env={"PATH": "/usr/bin:/bin", "DOCKER_BUILDKIT": "0"})
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stderr.decode(errors='replace')}")
        return result

    def answers(self) -> bool:
        """Whether every service answers through B's gateway."""
        return all(self.docker(*command, check=False, timeout=30).returncode == 0
                   for command in (["info"], ["images"], ["volume", "ls"], ["network", "ls"]))


def _tls(certs: Certs) -> list[str]:
    return ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]


def _start_host_a(a: Host, root: Path, certs: Certs) -> None:
    peers = [arg for service in ("image", "volume", "network")
             for arg in (f"--{service}-addr", f"tcp://{a.address}:{PORTS[service]}")]
    for service, port in PORTS.items():
        a.start([*BERTH, "serve", service, "--data-root", str(root / "data"),
                 "--exec-root", str(root / "run"), "--listen", f"tcp://{a.address}:{port}",
                 *_tls(certs), *(peers if service == "container" else [])],
                root / f"{service}.log")


def _start_host_b(b: Host, a: Host, root: Path, logs: Path, certs: Certs) -> None:
    peers = [arg for service, port in PORTS.items()
             for arg in (f"--{service}-addr", f"tcp://{a.address}:{port}")]
    roots = ["--data-root", str(root / "data"), "--exec-root", str(root / "run")]
    b.start([*BERTH, "serve", "build", *roots, *_tls(certs), *peers], logs / "build.log")
    b.start([*BERTH, "serve", "gateway", *roots, *_tls(certs), *peers,
             "--tcp", f"{b.address}:{DOCKER_PORT}", "--tlscacert", str(certs.ca),
             "--tlscert", str(certs.cert), "--tlskey", str(certs.key)], logs / "gateway.log")


@pytest.fixture(scope="module")
def placement(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Placement]:
    logs = tmp_path_factory.mktemp("placement-logs")
    a_root = Path(tempfile.mkdtemp(prefix="berth-host-a-"))
    b_root = Path(tempfile.mkdtemp(prefix="berth-host-b-"))
    try:
        with two_hosts(SUBNET) as (a, b):
            certs = make_certs(tmp_path_factory.mktemp("tls"), (a.address, b.address))
            placed = Placement(a, b, a_root, b_root, certs, logs / "docker-config")
            _start_host_a(a, a_root, certs)
            b.hide_and_mount(private=[b_root], hidden=[a_root])
            _start_host_b(b, a, b_root, logs, certs)
            try:
                wait_for(placed.answers, timeout=60, message="services answering on host B")
                yield placed
            finally:
                ids = placed.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    placed.docker("rm", "-f", "-v", *[i.decode() for i in ids], check=False)
                b.stop()
                a.stop()
                for log in [*logs.glob("*.log"), *a_root.glob("*.log")]:
                    print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    finally:
        unmount_below(a_root)
        purge_instance(a_root / "run")
        shutil.rmtree(a_root, ignore_errors=True)
        shutil.rmtree(b_root, ignore_errors=True)


def test_host_b_sees_none_of_host_a_files(placement: Placement) -> None:
    inside_b = subprocess.run([*placement.b.enter(), "ls", "-A", str(placement.a_root)],
                              capture_output=True, text=True, timeout=30, check=True)
    assert inside_b.stdout == ""
    assert (placement.a_root / "data").is_dir()


def test_docker_info_reports_host_a(placement: Placement) -> None:
    info = json.loads(placement.docker("info", "--format", "{{json .}}", over_tls=True).stdout)
    assert info["DockerRootDir"] == str(placement.a_root / "data")
    assert info["Driver"] == "overlay2"
    assert info["NCPU"] > 0 and info["MemTotal"] > 0
    assert info["KernelVersion"] and info["DefaultRuntime"] == "runc"
    assert "runc" in info["Runtimes"]


def test_docker_build_and_run_through_host_b(placement: Placement, busybox_tar: Path,
                                             tmp_path: Path) -> None:
    placement.docker("load", "-i", str(busybox_tar))
    (tmp_path / "hello.txt").write_text("hello from the context\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox AS first\n"
        "RUN echo one > /one\n"
        "FROM busybox\n"
        "COPY --from=first /one /from-first\n"
        "WORKDIR /work\n"
        "COPY hello.txt .\n"
        "RUN cat /from-first hello.txt > both\n")
    placement.docker("build", "-t", "placed:1", str(tmp_path))
    ran = placement.docker("run", "--rm", "placed:1", "cat", "/work/both")
    assert ran.stdout.decode() == "one\nhello from the context\n"
