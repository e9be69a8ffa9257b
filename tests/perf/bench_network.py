"""Network benchmarks through the real docker CLI, berth beside Debian's dockerd 20.10.

  .venv/bin/python -m tests.perf.bench_network [--megabytes 1024] [--repeat 5]

- network create: median seconds of `docker network create` (then rm);
- ready: median seconds from `docker run -d -p 127.0.0.1::80 httpd` on a user
  network until the published port answers an HTTP request from the host;
- throughput: MB/s of one TCP stream of --megabytes from the host through the
  published 127.0.0.1 port into `nc -l` in the container.

dockerd runs with --iptables=false (it must not touch this shared host's
firewall), so its published ports go through docker-proxy, the path Docker
uses for 127.0.0.1 anyway; berth uses nftables DNAT.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.perf.bench_container import Target, berth, real_dockerd
from tests.support.images import busybox_archive

SUBNETS = {"berth": "10.203.1.0/24", "dockerd 20.10": "10.203.2.0/24"}


def create_latency(target: Target, repeat: int) -> float:
    times = []
    for index in range(repeat):
        start = time.perf_counter()
        target.docker("network", "create", f"bench-create-{index}")
        times.append(time.perf_counter() - start)
        target.docker("network", "rm", f"bench-create-{index}")
    return statistics.median(times)


def published_port(target: Target, container: str) -> int:
    line = target.docker("port", container, "80/tcp").stdout.decode().split("\n")[0]
    return int(line.rsplit(":", 1)[1])


def ready_latency(target: Target, repeat: int) -> float:
    times = []
    for index in range(repeat):
        name = f"bench-web-{index}"
        start = time.perf_counter()
        target.docker("run", "-d", "--name", name, "--network", "bench", "-p", "127.0.0.1::80",
                      "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
        port = published_port(target, name)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2):
                    break
            except OSError:
                time.sleep(0.005)
        times.append(time.perf_counter() - start)
        target.docker("rm", "-f", name)
    return statistics.median(times)


def throughput(target: Target, megabytes: int) -> float:
    target.docker("run", "-d", "--name", "bench-sink", "--network", "bench", "-p",
                  "127.0.0.1::80", "busybox", "sh", "-c", "nc -l -p 80 > /dev/null")
    port = published_port(target, "bench-sink")
    chunk = b"\0" * (1 << 20)
    deadline = time.monotonic() + 10
    while True:
        try:
            stream = socket.create_connection(("127.0.0.1", port), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    start = time.perf_counter()
    with stream:
        for _ in range(megabytes):
            stream.sendall(chunk)
        stream.shutdown(socket.SHUT_WR)
        stream.recv(1)  # EOF once nc has read everything and exited
    elapsed = time.perf_counter() - start
    target.docker("rm", "-f", "bench-sink")
    return megabytes / elapsed


def measure(target: Target, megabytes: int, repeat: int) -> dict[str, float]:
    target.docker("network", "create", "--subnet", SUBNETS[target.name], "bench")
    try:
        return {"network create (s)": create_latency(target, repeat),
                "run to port ready (s)": ready_latency(target, repeat),
                "throughput (MB/s)": throughput(target, megabytes)}
    finally:
        target.docker("network", "rm", "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = busybox_archive(Path(tmp) / "busybox.tar")
        results = {}
        with berth(archive) as target:
            results["berth"] = measure(target, args.megabytes, args.repeat)
        with real_dockerd(archive) as target:
            results["dockerd"] = measure(target, args.megabytes, args.repeat)
    print(f"{'metric':<24}{'berth':>12}{'dockerd':>12}{'ratio':>10}")
    for metric, ours in results["berth"].items():
        theirs = results["dockerd"][metric]
        print(f"{metric:<24}{ours:>12.3f}{theirs:>12.3f}{ours / theirs:>10.2f}")


if __name__ == "__main__":
    main()
