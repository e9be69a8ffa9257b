"""Container benchmarks through the real docker CLI, berth beside Debian's dockerd 20.10.

  .venv/bin/python -m tests.perf.bench_container [--runs 20] [--containers 50]

Measures: the median wall time of `docker run --rm busybox true`; the time to
start N `docker run -d busybox sleep` in parallel; the memory the engine adds
per running container (its monitors' RSS plus the growth of the engine's own
processes). Both engines run on temporary roots with their own sockets and
are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.engine import DOCKER_CLI, running_engine
from tests.support.images import busybox_archive
from tests.support.processes import stop_process

# dockerd's default bridge, on a subnet the tests' engines do not use.
DOCKERD_BRIDGE = "docker0"
DOCKERD_BRIDGE_ADDRESS = "10.213.0.1/24"


@dataclass
class Target:
    """One engine under test: how to reach it and which processes are its own."""

    name: str
    host: str
    engine_pids: Callable[[], list[int]]
    monitor_pids: Callable[[], list[int]]

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_HOST=self.host)
        env.pop("DOCKER_CONTEXT", None)
        return subprocess.run([DOCKER_CLI, *args], env=env, capture_output=True, check=True,
                              timeout=300)


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def pids_matching(*needles: str) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if all(needle in cmdline(pid) for needle in needles)]


def process_tree(root: int) -> list[int]:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(root)], capture_output=True,
                              text=True).stdout.split()
    return [root] + [pid for child in children for pid in process_tree(int(child))]


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@contextlib.contextmanager
def real_dockerd(archive: Path) -> Iterator[Target]:
    root = Path(tempfile.mkdtemp(prefix="bench-dockerd-"))
    sock = root / "docker.sock"
    exec_root = root / "run"
    # dockerd's containers join its default bridge as berth's join berth's:
    # the same work per `docker run`. It leaves the bridge behind; it goes
    # at the end unless it was there before.
    bridge_was_there = Path("/sys/class/net", DOCKERD_BRIDGE).exists()
    process = subprocess.Popen(
        ["dockerd", "-H", f"unix://{sock}", "--data-root", str(root / "data"),
         "--exec-root", str(exec_root), "--pidfile", str(root / "docker.pid"),
         "--bip", DOCKERD_BRIDGE_ADDRESS, "--iptables=false", "--ip6tables=false"],
        stdout=subprocess.DEVNULL, stderr=(root / "dockerd.log").open("wb"),
        start_new_session=True)
    target = Target("dockerd 20.10", f"unix://{sock}",
                    engine_pids=lambda: process_tree(process.pid),
                    monitor_pids=lambda: pids_matching("containerd-shim", str(exec_root)))
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        target.docker("load", "-i", str(archive))
        yield target
    finally:
        with contextlib.suppress(Exception):
            ids = target.docker("ps", "-aq").stdout.decode().split()
            if ids:
                target.docker("rm", "-f", *ids)
        stop_process(process, group=True)
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        if not bridge_was_there:
            subprocess.run(["ip", "link", "del", DOCKERD_BRIDGE], capture_output=True)


@contextlib.contextmanager
def berth(archive: Path) -> Iterator[Target]:
    with running_engine("bench-berth-") as engine:
        assert engine.process is not None
        engine_pid = engine.process.pid
        target = Target("berth", engine.host,
                        engine_pids=lambda: process_tree(engine_pid),
                        monitor_pids=lambda: pids_matching("conmon", str(engine.root)))
        target.docker("load", "-i", str(archive))
        yield target


def run_latency(target: Target, runs: int) -> float:
    target.docker("run", "--rm", "busybox", "true")  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        target.docker("run", "--rm", "busybox", "true")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parallel_runs_and_memory(target: Target, count: int) -> tuple[float, float]:
    """Seconds for `count` parallel `run -d`, and bytes added per running container."""
    before = rss_bytes(target.engine_pids())
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda i: target.docker("run", "-d", "busybox", "sleep", "1000"),
                      range(count)))
    elapsed = time.perf_counter() - start
    time.sleep(2)
    # Monitors may or may not be the engine's children: count each process once.
    after = rss_bytes(sorted(set(target.engine_pids()) | set(target.monitor_pids())))
    ids = target.docker("ps", "-q").stdout.decode().split()
    target.docker("rm", "-f", *ids)
    per_container = (after - before) / count
    return elapsed, per_container


def require_dockerd() -> None:
    """The baseline is Debian's dockerd 20.10; say how to get it when missing."""
    if shutil.which("dockerd") is None:
        raise SystemExit("dockerd is missing: apt-get install -y docker.io")


def against_dockerd(prefix: str, measure: Callable[[Target, Path], dict[str, float]]
                    ) -> dict[str, dict[str, float]]:
    """`measure(target, workdir)` on berth, then on Debian's dockerd 20.10,
    each started on temporary roots with busybox loaded; the results by
    engine name. `workdir` is a scratch directory, removed at the end."""
    require_dockerd()
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    results: dict[str, dict[str, float]] = {}
    try:
        archive = busybox_archive(workdir / "busybox.tar")
        for make in (berth, real_dockerd):
            with make(archive) as target:
                results[target.name] = measure(target, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def print_comparison(results: dict[str, dict[str, float]],
                     rows: Iterable[tuple[str, str] | tuple[str, str, float]]) -> None:
    """One line per measurement: berth, dockerd, and berth/dockerd."""
    ours, theirs = results["berth"], results["dockerd 20.10"]
    print(f"{'benchmark':48} {'berth':>10} {'dockerd':>10} {'ratio':>7}")
    for label, key, *scale in rows:
        factor = scale[0] if scale else 1
        ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
        print(f"{label:48} {ours[key] * factor:10.3f} {theirs[key] * factor:10.3f} {ratio:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--containers", type=int, default=50)
    args = parser.parse_args()

    def measure(target: Target, workdir: Path) -> dict[str, float]:
        latency = run_latency(target, args.runs)
        elapsed, per_container = parallel_runs_and_memory(target, args.containers)
        return {"run": latency, "parallel": elapsed, "memory": per_container}

    results = against_dockerd("bench-container-", measure)
    rows = (("docker run --rm busybox true, median s", "run", 1),
            (f"{args.containers} parallel docker run -d, s", "parallel", 1),
            ("memory added per running container, MiB", "memory", 1 / 2**20))
    print_comparison(results, rows)


if __name__ == "__main__":
    main()
