"""Volume benchmarks through the real docker CLI, berth beside Debian's dockerd 20.10.

  .venv/bin/python -m tests.perf.bench_volume [--volumes 100] [--runs 10]

Measures: `docker volume create` then `docker volume rm` of N volumes in
parallel (8 clients); `docker volume ls` with those N volumes present; and
`docker run --rm -v <new volume>:/etc busybox true` (lease, copy-up of the
image's /etc, release), median of --runs. Both engines run on temporary
roots with their own sockets and are stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from tests.perf.bench_container import Target, against_dockerd, print_comparison

CLIENTS = 8


def parallel(target: Target, commands: list[list[str]]) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda args: target.docker(*args), commands))
    return time.perf_counter() - start


def measure(target: Target, volumes: int, runs: int) -> dict[str, float]:
    names = [f"bench-{index}" for index in range(volumes)]
    created = parallel(target, [["volume", "create", name] for name in names])
    start = time.perf_counter()
    target.docker("volume", "ls")
    listed = time.perf_counter() - start
    removed = parallel(target, [["volume", "rm", name] for name in names])
    times = []
    for index in range(runs):
        start = time.perf_counter()
        target.docker("run", "--rm", "-v", f"copy-{index}:/etc", "busybox", "true")
        times.append(time.perf_counter() - start)
    return {"create": created, "ls": listed, "rm": removed, "run": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    results = against_dockerd("bench-volume-", lambda target, workdir: measure(
        target, args.volumes, args.runs))
    rows = ((f"create {args.volumes} volumes ({CLIENTS} clients), s", "create"),
            (f"volume ls with {args.volumes} volumes, s", "ls"),
            (f"rm {args.volumes} volumes ({CLIENTS} clients), s", "rm"),
            ("run --rm -v new:/etc (copy-up, median), s", "run"))
    print_comparison(results, rows)


if __name__ == "__main__":
    main()
