"""The network service alone on temporary roots, driven over gRPC.

Processes started inside a sandbox's netns (busybox httpd, nc, ping) go
through `nsenter --net=PATH`; each is ended by its PID at teardown.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from berth.network.v1 import network_pb2, network_pb2_grpc
from services.common.config import Config
from services.network import kernel
from tests.support.engine import BERTH, REPO
from tests.support.processes import stop_process


@dataclass
class NetworkService:
    root: Path
    args: tuple[str, ...] = ()            # more `berth serve network` options
    process: subprocess.Popen | None = None
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return Config(data_root=self.root / "data", exec_root=self.root / "run")

    @property
    def prefix(self) -> str:
        return self.config.instance_prefix

    @property
    def socket(self) -> Path:
        return self.root / "run" / "network.sock"

    def start(self, timeout: float = 30) -> None:
        log = (self.root / "network.log").open("ab")
        self.process = subprocess.Popen(
            [*BERTH, "serve", "network", "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "run"), *self.args], cwd=REPO, stdout=log, stderr=log,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"network service exited:\n{self.logs()}")
            if self.socket.exists():
                with contextlib.suppress(grpc.RpcError):
                    self.stub().List(network_pb2.ListNetworksRequest(), timeout=2)
                    return
            time.sleep(0.1)
        raise RuntimeError(f"network service did not start:\n{self.logs()}")

    def stop(self) -> int | None:
        return None if self.process is None else stop_process(self.process, group=True)

    def logs(self) -> str:
        path = self.root / "network.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stub(self) -> network_pb2_grpc.NetworkServiceStub:
        channel = grpc.insecure_channel(f"unix://{self.socket}")
        return network_pb2_grpc.NetworkServiceStub(channel)

    def spawn(self, netns: str, *argv: str) -> subprocess.Popen:
        """A long-running process inside `netns`, ended at teardown."""
        child = subprocess.Popen(["nsenter", f"--net={netns}", *argv],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(child)
        return child

    def end_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait()
        self.children.clear()


# Debian's containernetworking-plugins, which the CNI tests run.
CNI_PLUGIN_DIR = Path("/usr/lib/cni")
needs_cni_plugins = pytest.mark.skipif(not (CNI_PLUGIN_DIR / "bridge").exists(),
                                       reason="containernetworking-plugins is not installed")


def free_subnet(second_octet: int) -> ipaddress.IPv4Network:
    """A 10.<second_octet>.x.0/24 no interface or route of the host uses."""
    taken = kernel.host_networks()
    free = [ipaddress.IPv4Network(f"10.{second_octet}.{x}.0/24") for x in range(100, 250)]
    return random.choice([n for n in free if not any(n.overlaps(t) for t in taken)])


def serve_http(service: NetworkService, box: network_pb2.Sandbox, directory: Path,
               text: str) -> None:
    """busybox httpd in the sandbox's netns serving `text`, once it accepts."""
    directory.mkdir(exist_ok=True)
    (directory / "index.html").write_text(text)
    service.spawn(box.netns_path, "busybox", "httpd", "-f", "-p", "80", "-h", str(directory))
    address = box.endpoints[0].ip_address
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, 80), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("httpd did not start")


def run_in(netns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={netns}", *argv], capture_output=True,
                          text=True, timeout=timeout)


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


@contextlib.contextmanager
def running_network_service(args: tuple[str, ...] = ()) -> Iterator[NetworkService]:
    root = Path(tempfile.mkdtemp(prefix="berth-net-"))
    service = NetworkService(root, args)
    service.start()
    try:
        yield service
    finally:
        service.end_children()
        service.stop()
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        for target in sorted((line.split()[1] for line in mounts
                              if line.split()[1].startswith(str(root))), reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
