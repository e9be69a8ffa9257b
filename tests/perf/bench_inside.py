"""Inside-container benchmarks through the real docker CLI, berth beside
Debian's dockerd 20.10.

  .venv/bin/python -m tests.perf.bench_inside [--runs 20] [--copies 5] [--megabytes 100]

Measures: the median wall time of `docker exec c true`, and of `docker cp`
of a directory of N MiB into a running container (a new directory each
time) and back out. Both engines run on temporary roots with their own
sockets and are stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

from tests.perf.bench_container import Target, against_dockerd, print_comparison

FILE_BYTES = 1 << 20


def exec_latency(target: Target, container: str, runs: int) -> float:
    target.docker("exec", container, "true")  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        target.docker("exec", container, "true")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(target: Target, *args: str) -> float:
    start = time.perf_counter()
    target.docker(*args)
    return time.perf_counter() - start


def copy_times(target: Target, container: str, source: Path, workdir: Path, copies: int
               ) -> tuple[float, float]:
    """Median seconds of copying `source` in and back out."""
    times_in, times_out = [], []
    for index in range(copies):
        os.sync()   # no writeback of the previous copy (or engine) during this one
        times_in.append(timed(target, "cp", str(source), f"{container}:/bench{index}"))
        destination = workdir / f"out-{target.name.replace(' ', '-')}"
        os.sync()
        times_out.append(timed(target, "cp", f"{container}:/bench{index}", str(destination)))
        shutil.rmtree(destination)
    return statistics.median(times_in), statistics.median(times_out)


def make_tree(root: Path, megabytes: int) -> Path:
    tree = root / "tree"
    for index in range(megabytes):
        directory = tree / f"d{index % 10}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index}").write_bytes(os.urandom(FILE_BYTES))
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()

    def measure(target: Target, workdir: Path) -> dict[str, float]:
        tree = workdir / "tree"
        if not tree.exists():   # made once: both engines copy the same files
            make_tree(workdir, args.megabytes)
        target.docker("run", "-d", "--network", "none", "--name", "bench",
                      "busybox", "sleep", "1000")
        latency = exec_latency(target, "bench", args.runs)
        copy_in, copy_out = copy_times(target, "bench", tree, workdir, args.copies)
        return {"exec": latency, "in": copy_in, "out": copy_out}

    results = against_dockerd("bench-inside-", measure)
    rows = (("docker exec c true, median s", "exec"),
            (f"docker cp {args.megabytes} MiB dir into container, median s", "in"),
            (f"docker cp {args.megabytes} MiB dir out of container, median s", "out"))
    print_comparison(results, rows)


if __name__ == "__main__":
    main()
