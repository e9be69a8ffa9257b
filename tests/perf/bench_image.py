"""Pull and save of a 5-layer ~200 MB image from a loopback registry:
berth against Debian's dockerd 20.10, side by side.

Run as root: `.venv/bin/python tests/perf/bench_image.py`. Installs the
docker.io package when dockerd is missing, runs dockerd on its own temp roots
and socket, and stops it (by PID) at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.engine import DOCKER_CLI, running_engine  # noqa: E402
from tests.support.images import image_archive  # noqa: E402
from tests.support.registry import running_registry  # noqa: E402

LAYERS = 5
LAYER_BYTES = 40 << 20
ROUNDS = 3


def ensure_dockerd() -> str:
    path = shutil.which("dockerd")
    if path:
        return path
    subprocess.run(["apt-get", "install", "-y", "-q", "docker.io"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return shutil.which("dockerd") or "/usr/sbin/dockerd"


def layer(index: int) -> bytes:
    """An uncompressed layer of mostly incompressible bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(LAYER_BYTES)
        info = tarfile.TarInfo(f"layer{index}/data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@contextlib.contextmanager
def real_dockerd(root: Path) -> Iterator[str]:
    socket = root / "docker.sock"
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [ensure_dockerd(), "-H", f"unix://{socket}", "--data-root", str(root / "data"),
         "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
         "--bridge", "none", "--iptables=false"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not socket.exists() or subprocess.run(
                [DOCKER_CLI, "-H", f"unix://{socket}", "version"],
                capture_output=True).returncode != 0:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError((root / "dockerd.log").read_text()[-3000:])
            time.sleep(0.5)
        yield f"unix://{socket}"
    finally:
        stop_process(process)
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True)


def timed(host: str, *args: str, config: Path) -> float:
    env = dict(os.environ, DOCKER_HOST=host, DOCKER_CONFIG=str(config))
    started = time.perf_counter()
    subprocess.run([DOCKER_CLI, *args], env=env, check=True, capture_output=True, timeout=900)
    return time.perf_counter() - started


def measure(host: str, image: str, work: Path) -> tuple[float, float]:
    """Best of ROUNDS (pull, save) runs, each pull starting from an empty store."""
    config = work / "docker-config"
    pulls, saves = [], []
    for _ in range(ROUNDS):
        pulls.append(timed(host, "pull", image, config=config))
        saves.append(timed(host, "save", "-o", str(work / "saved.tar"), image, config=config))
        (work / "saved.tar").unlink()
        timed(host, "rmi", image, config=config)
    return min(pulls), min(saves)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="berth-bench-image-"))
    try:
        archive = work / "big.tar"
        archive.write_bytes(image_archive([layer(i) for i in range(LAYERS)], ["bench:1"],
                                          compress=True))
        with running_registry() as registry:
            image = f"{registry.address}/bench/big:1"
            subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                            f"docker-archive:{archive}", f"docker://{image}"], check=True)
            archive.unlink()
            with running_engine(prefix="berth-bench-") as engine:
                berth = measure(engine.host, image, work)
            docker_root = work / "dockerd"
            docker_root.mkdir()
            with real_dockerd(docker_root) as host:
                docker = measure(host, image, work)
        size_mb = LAYERS * LAYER_BYTES / 1e6
        print(f"image: {LAYERS} layers, {size_mb:.0f} MB; best of {ROUNDS} runs")
        for label, ours, theirs in (("pull", berth[0], docker[0]), ("save", berth[1], docker[1])):
            print(f"{label}: berth {ours:.2f}s  dockerd {theirs:.2f}s  "
                  f"ratio berth/dockerd {ours / theirs:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
