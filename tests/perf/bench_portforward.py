"""Port-forward throughput of the CRI streaming server.

  .venv/bin/python -m tests.perf.bench_portforward [--megabytes 1024] [--repeat 3]
  .venv/bin/python -m tests.perf.bench_portforward --crictl /work/cri-bin/crictl \
      --endpoint unix:///run/containerd/containerd.sock --pod POD_ID --port 5000

Without --crictl: a berth engine on temporary roots, a busybox container
serving port 5000 with `nc -ll -e`, and berth's streaming server constructed
directly (as the cri service does); the SPDY client of tests/support moves
--megabytes into the pod (upload: into `nc -l > /dev/null`) and out of it
(download: from `nc -l < /dev/zero`). It prints MB/s, the median of
--repeat runs each way.

With --crictl: `crictl port-forward` against any CRI endpoint (containerd,
or berth's cri service) forwards a local port to --port of --pod, and the
same bytes go through that local port: the same Go client for every
runtime, so the numbers compare runtimes. The pod must serve --port with
a sink for upload, or with a source for --download (as SERVERS below).
--server-pid adds the CPU time the streaming process spent per GB, a
measure that holds on a busy machine where MB/s varies run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from berth.container.v1.container_pb2_grpc import ContainerServiceStub
from services.common.config import Config
from services.common.peers import PeerClient
from services.cri.streaming import StreamingServer
from tests.support.engine import Engine, running_engine
from tests.support.images import busybox_archive
from tests.support.kubestream import PortForward

CHUNK = 1 << 20
PORT = 5000
# A persistent server on PORT running, per connection, a sink or a source
# (busybox nc -ll -e; a plain `nc -l > /dev/null` half-closes at once, as its
# stdin is empty, and client-go ends a forwarded connection on that).
SERVERS = {
    way: f"printf '#!/bin/sh\\nexec {command}\\n' > /serve && chmod +x /serve && "
         f"exec nc -ll -p {PORT} -e /serve"
    for way, command in (("upload", "cat > /dev/null"), ("download", "cat /dev/zero"))
}


async def upload(forward: PortForward, total: int) -> float:
    error = await forward.session.open({"port": str(PORT), "requestid": "up",
                                        "streamtype": "error"})
    await error.close()
    data = await forward.session.open({"port": str(PORT), "requestid": "up",
                                       "streamtype": "data"})
    chunk = b"\0" * CHUNK
    start = time.perf_counter()
    for _ in range(total // CHUNK):
        await data.write(chunk)
    await data.close()
    await data.read_all()                    # the pod closed after reading everything
    return time.perf_counter() - start


async def download(forward: PortForward, total: int) -> float:
    error = await forward.session.open({"port": str(PORT), "requestid": "down",
                                        "streamtype": "error"})
    await error.close()
    data = await forward.session.open({"port": str(PORT), "requestid": "down",
                                       "streamtype": "data"})
    received = 0
    start = time.perf_counter()
    while received < total:
        chunk = await data.read()
        if not chunk:
            raise RuntimeError(f"the pod ended after {received} bytes")
        received += len(chunk)
    elapsed = time.perf_counter() - start
    await data.abort()
    return elapsed


def run_container(engine: Engine, shell: str) -> tuple[str, str]:
    cid = engine.docker("run", "-d", "busybox", "sh", "-c", shell).stdout.decode().strip()
    netns = engine.docker("inspect", "-f", "{{.NetworkSettings.SandboxKey}}",
                          cid).stdout.decode().strip()
    while engine.docker("exec", cid, "sh", "-c", f"netstat -ltn | grep -q :{PORT}",
                        check=False).returncode != 0:
        time.sleep(0.05)
    return cid, netns


async def measure(engine: Engine, netns: str, cid: str,
                  transfer: Callable[[PortForward, int], Awaitable[float]], total: int) -> float:
    container = PeerClient.connect(Config(exec_root=engine.exec_root), "container",
                                   ContainerServiceStub)
    server = StreamingServer(container)
    await server.start()
    try:
        forward = await PortForward.spdy(server.portforward_url(cid, netns, [PORT]))
        try:
            return await transfer(forward, total)
        finally:
            await forward.close()
    finally:
        await server.stop()
        await container.close()


def bench_berth(megabytes: int, repeat: int) -> None:
    total = megabytes * CHUNK
    with running_engine(prefix="berth-bench-pf-") as engine:
        engine.docker("load", "-i", str(busybox_archive(engine.root / "busybox.tar")))
        for name, transfer in (("upload", upload), ("download", download)):
            cid, netns = run_container(engine, SERVERS[name])
            times = [asyncio.run(measure(engine, netns, cid, transfer, total))
                     for _ in range(repeat)]
            print(f"berth streaming server, {name}: "
                  f"{megabytes / statistics.median(times):.0f} MB/s")
            engine.docker("rm", "-f", cid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_crictl(args: argparse.Namespace) -> None:
    local = free_port()
    forwarder = subprocess.Popen(
        [args.crictl, "--runtime-endpoint", args.endpoint, "port-forward", args.pod,
         f"{local}:{args.port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert forwarder.stdout is not None
        forwarder.stdout.readline()          # "Forwarding from 127.0.0.1:..."
        cpu_before = cpu_seconds(args.server_pid) if args.server_pid else 0.0
        times = [transfer_local(local, args.megabytes * CHUNK, args.download)
                 for _ in range(args.repeat)]
        way = "download" if args.download else "upload"
        print(f"crictl port-forward to {args.endpoint}, {way}: "
              f"{args.megabytes / statistics.median(times):.0f} MB/s")
        if args.server_pid:
            spent = cpu_seconds(args.server_pid) - cpu_before
            gigabytes = args.megabytes * args.repeat / 1024
            print(f"  streaming server CPU: {spent / gigabytes:.2f} s per GB")
    finally:
        forwarder.terminate()
        forwarder.wait()


def transfer_local(port: int, total: int, download_: bool) -> float:
    with socket.create_connection(("127.0.0.1", port)) as stream:
        start = time.perf_counter()
        if download_:
            received = 0
            while received < total:
                chunk = stream.recv(CHUNK)
                if not chunk:
                    raise RuntimeError(f"the pod ended after {received} bytes")
                received += len(chunk)
            return time.perf_counter() - start
        chunk = b"\0" * CHUNK
        for _ in range(total // CHUNK):
            stream.sendall(chunk)
        stream.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while stream.recv(CHUNK):
                pass
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--crictl", help="measure `crictl port-forward` instead")
    parser.add_argument("--endpoint", help="the CRI endpoint for --crictl")
    parser.add_argument("--pod", help="the pod sandbox ID for --crictl")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--download", action="store_true",
                        help="with --crictl: read from the pod instead of writing")
    parser.add_argument("--server-pid", type=int,
                        help="with --crictl: the process serving the streams (berth's cri "
                             "service, containerd), to report its CPU time per GB")
    args = parser.parse_args()
    if args.crictl:
        bench_crictl(args)
    else:
        bench_berth(args.megabytes, args.repeat)


if __name__ == "__main__":
    main()
