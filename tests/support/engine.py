"""A real berth engine on temporary roots, driven by the docker CLI and SDK."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
from pyroute2 import IPRoute

from services.common.config import Config
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
BERTH = [sys.executable, "-m", "cli.main"]
DOCKER_CLI = shutil.which("docker", path="/usr/local/bin") or "docker"


@dataclass
class Engine:
    root: Path
    process: subprocess.Popen | None = None
    args: tuple[str, ...] = ()            # more `berth up` options
    umask: int = -1                       # the umask `berth up` starts with; -1: ours
    wrapper: tuple[str, ...] = ()         # runs `berth up`, e.g. nsenter into a netns
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.data_root = self.root / "data"
        self.exec_root = self.root / "run"
        self.log_path = self.root / "engine.log"

    @property
    def socket(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.wrapper, *BERTH, "up", "--data-root", str(self.data_root), "--exec-root",
             str(self.exec_root), *self.args], cwd=REPO, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True, umask=self.umask)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line or self.process.poll() is not None:
                break
        if not line.startswith(b"berth ready:"):
            self.stop()
            raise RuntimeError(f"engine did not start: {line!r}\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        return None if self.process is None else stop_process(self.process, group=True)

    def env(self) -> dict[str, str]:
        env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_BUILDKIT="0")
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_CONFIG"] = str(self.root / "docker-config")
        return env

    def docker(self, *args: str, input: bytes | None = None, check: bool = True,
               timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the real docker CLI against this engine."""
        result = subprocess.run([DOCKER_CLI, *args], env=self.env(), input=input,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr.decode(errors='replace')}")
        return result

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=120)

    def clean(self) -> None:
        """Remove every container, then the non-default networks and all volumes."""
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *[i.decode() for i in ids], check=False)
        nets = self.docker("network", "ls", "-q", "--filter", "type=custom", check=False)
        if nets.returncode == 0 and nets.stdout.split():
            self.docker("network", "rm", *[n.decode() for n in nets.stdout.split()],
                        check=False)
        vols = self.docker("volume", "ls", "-q", check=False)
        if vols.returncode == 0 and vols.stdout.split():
            self.docker("volume", "rm", "-f", *[v.decode() for v in vols.stdout.split()],
                        check=False)


def unmount_below(path: Path) -> None:
    """Lazily unmount anything a failed test left mounted under `path`."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    targets = [line.split()[1] for line in mounts if line.split()[1].startswith(str(path))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def purge_instance(exec_root: Path) -> None:
    """Remove what an engine leaves in the kernel by design (as docker0 stays
    after dockerd stops): its links, nftables tables and cgroup parents. Only
    objects named with this engine's instance prefix are touched."""
    prefix = Config(exec_root=exec_root).instance_prefix
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(prefix):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
    for family in ("ip", "bridge", "inet"):
        subprocess.run(["nft", "delete", "table", family, prefix], capture_output=True,
                       check=False)
    for parent in Path("/sys/fs/cgroup").glob(f"*/{prefix}"):
        for child in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        with contextlib.suppress(OSError):
            parent.rmdir()


@contextlib.contextmanager
def running_engine(prefix: str = "berth-test-", args: tuple[str, ...] = (), umask: int = -1,
                   wrapper: tuple[str, ...] = ()):
    root = Path(tempfile.mkdtemp(prefix=prefix))
    engine = Engine(root, args=args, umask=umask, wrapper=wrapper)
    engine.start()
    try:
        yield engine
    finally:
        with contextlib.suppress(Exception):
            engine.clean()
        engine.stop()
        unmount_below(root)
        purge_instance(engine.exec_root)
        shutil.rmtree(root, ignore_errors=True)
