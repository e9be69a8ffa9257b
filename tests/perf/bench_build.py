"""Build benchmarks through the real docker CLI (legacy builder), berth beside
Debian's dockerd 20.10.

  .venv/bin/python -m tests.perf.bench_build [--megabytes 50] [--repeat 7]

An 11-step Dockerfile (ENV, LABEL, WORKDIR, COPY of --megabytes of files in
1 MiB files, COPY of one small file, ARG, RUN with that build arg, CMD) is
built three ways: the first build, a rebuild with nothing changed (every step
from the cache), and a rebuild after one of the big files changed (from that
COPY on). Both engines run on temporary roots with their own sockets and are
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from tests.perf.bench_container import Target, against_dockerd, print_comparison
from tests.support.engine import DOCKER_CLI

DOCKERFILE = """\
FROM busybox
ENV APP=bench
LABEL purpose=bench
WORKDIR /app
COPY data/ /app/data/
COPY app.txt /app/app.txt
ARG MODE=bench
RUN du -s /app/data > /app/size.txt
ENV STAGE=done
LABEL done=yes
CMD ["cat", "/app/size.txt"]
"""


def make_context(root: Path, megabytes: int) -> Path:
    (root / "data").mkdir(parents=True)
    for index in range(megabytes):
        (root / "data" / f"file-{index:03}.bin").write_bytes(os.urandom(1 << 20))
    (root / "app.txt").write_text("app\n")
    (root / "Dockerfile").write_text(DOCKERFILE)
    return root


def timed_build(target: Target, context: Path) -> tuple[float, str]:
    env = dict(os.environ, DOCKER_HOST=target.host, DOCKER_BUILDKIT="0")
    env.pop("DOCKER_CONTEXT", None)
    start = time.perf_counter()
    result = subprocess.run([DOCKER_CLI, "build", "-t", "bench:latest", str(context)],
                            env=env, capture_output=True, check=True, timeout=600)
    return time.perf_counter() - start, result.stdout.decode()


def measure(target: Target, context: Path, repeat: int) -> dict[str, float]:
    first, _ = timed_build(target, context)
    cached = []
    for _ in range(repeat):
        elapsed, out = timed_build(target, context)
        assert "Running in" not in out, out
        cached.append(elapsed)
    changed = []
    for round_ in range(repeat):
        (context / "data" / "file-007.bin").write_bytes(os.urandom(1 << 20) + bytes([round_]))
        elapsed, out = timed_build(target, context)
        assert out.count("Using cache") == 3, out
        changed.append(elapsed)
    return {"first": first, "cached": statistics.median(cached),
            "changed": statistics.median(changed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = against_dockerd("bench-build-", lambda target, workdir: measure(
        target, make_context(workdir / f"context-{target.name.replace(' ', '-')}",
                             args.megabytes), args.repeat))
    rows = ((f"first build ({args.megabytes} MiB COPY), s", "first"),
            ("rebuild, nothing changed (median), s", "cached"),
            ("rebuild, one file changed (median), s", "changed"))
    print_comparison(results, rows)


if __name__ == "__main__":
    main()
