"""Two "hosts" on one machine: network namespaces joined by a veth pair, and
processes started inside them, each ended by its PID at teardown.

Host A is a network namespace; host B is a network namespace plus a mount
namespace (held by one `sleep` process) in which tmpfs mounts give B private
data and exec roots and hide directories of host A.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import NetNS, netns

from tests.support.engine import REPO
from tests.support.processes import stop_process

PREFIXLEN = 30


@dataclass
class Host:
    netns: str                       # name under /var/run/netns
    address: str
    mount_holder: subprocess.Popen | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def enter(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        if self.mount_holder is not None:
            return ["nsenter", f"--target={self.mount_holder.pid}", "--mount", "--net"]
        return ["nsenter", f"--net={self.netns_path}"]

    def start(self, argv: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as out:
            process = subprocess.Popen([*self.enter(), *argv], cwd=REPO, stdout=out,
                                       stderr=out, start_new_session=True)
        self.processes.append(process)
        return process

    def hide_and_mount(self, private: list[Path], hidden: list[Path]) -> None:
        """Give this host its own mount namespace: a fresh tmpfs on each of
        `private` and over each of `hidden`."""
        script = "".join(f"mount -t tmpfs tmpfs '{path}' && " for path in [*private, *hidden])
        self.mount_holder = subprocess.Popen(
            ["nsenter", f"--net={self.netns_path}", "unshare", "--mount",
             "--propagation", "private", "sh", "-c", f"{script}echo ready && exec sleep 3600"],
            stdout=subprocess.PIPE, start_new_session=True)
        assert self.mount_holder.stdout is not None
        assert self.mount_holder.stdout.readline() == b"ready\n"

    def stop(self) -> None:
        """SIGTERM to every process started here (then SIGKILL), then the mount holder."""
        for process in reversed(self.processes):
            _end(process)
        if self.mount_holder is not None:
            _end(self.mount_holder)


def _end(process: subprocess.Popen) -> None:
    stop_process(process)
    if process.stdout is not None:
        process.stdout.close()


def _configure(name: str, ifname: str, address: str) -> None:
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        index = ns.link_lookup(ifname=ifname)[0]
        ns.addr("add", index=index, address=address, prefixlen=PREFIXLEN)
        ns.link("set", index=index, state="up")


@contextlib.contextmanager
def two_hosts(subnet: str) -> Iterator[tuple[Host, Host]]:
    """Hosts A and B at subnet.1 and subnet.2 (a /30 of our choosing), each
    in a network namespace of its own, wired by a veth pair."""
    tag = secrets.token_hex(3)
    a = Host(netns=f"berth-host-a-{tag}", address=f"{subnet}.1")
    b = Host(netns=f"berth-host-b-{tag}", address=f"{subnet}.2")
    netns.create(a.netns)
    try:
        netns.create(b.netns)
        try:
            fd_b = os.open(b.netns_path, os.O_RDONLY)
            try:
                with NetNS(a.netns) as ns:
                    ns.link("add", ifname="host-a", kind="veth",
                            peer={"ifname": "host-b", "net_ns_fd": fd_b})
            finally:
                os.close(fd_b)
            _configure(a.netns, "host-a", a.address)
            _configure(b.netns, "host-b", b.address)
            try:
                yield a, b
            finally:
                b.stop()
                a.stop()
        finally:
            netns.remove(b.netns)
    finally:
        netns.remove(a.netns)
