"""CRI benchmarks through runtime.v1 gRPC, berth beside Debian's containerd 1.6.

  .venv/bin/python -m tests.perf.bench_cri [--runs 20] [--pods 10]

- pod start: median seconds of RunPodSandbox + CreateContainer +
  StartContainer of busybox (a new pod each time, on a CNI bridge);
- memory per running pod: the RSS of the runtime's per-pod processes with
  --pods pods of one container each running: berth's conmons (one per
  container, the pause container's included), containerd's runc v2 shim
  (one per pod); the pause and busybox processes are the same on both sides
  and not counted, nor are the runtimes' own daemons.

Both runtimes run on temporary roots with their own sockets, CNI bridges and
subnets, and the same images (busybox and a busybox-based pause), loaded
from archives; containerd with Debian's CNI plugins and restrict_oom_score_adj
(this host's root lacks CAP_SYS_RESOURCE). Both are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from k8s.runtime.v1 import api_pb2 as cri
from k8s.runtime.v1 import api_pb2_grpc
from services.network import kernel
from tests.perf.bench_container import pids_matching, rss_bytes
from tests.support.cri import pause_image_archive
from tests.support.engine import running_engine
from tests.support.images import busybox_archive
from tests.support.processes import stop_process

PLUGIN_DIR = "/usr/lib/cni"
PAUSE = "berth-bench/pause:1"
SUBNETS = {"berth": "10.204.1.0/24", "containerd 1.6": "10.204.2.0/24"}
BRIDGES = {"berth": "bbcri0", "containerd 1.6": "bbctd0"}


@dataclass
class Runtime:
    name: str
    endpoint: str
    busybox: str                                  # the image name as this runtime knows it
    per_pod_pids: Callable[[], list[int]]         # monitors of its containers or pods


def write_conflist(directory: Path, name: str) -> None:
    directory.mkdir(parents=True)
    (directory / "10-bench.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": f"bench-{BRIDGES[name]}", "plugins": [
            {"type": "bridge", "bridge": BRIDGES[name], "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "dataDir": str(directory.parent / "ipam"),
                      "ranges": [[{"subnet": SUBNETS[name]}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}))


@contextlib.contextmanager
def berth(images: list[Path]) -> Iterator[Runtime]:
    root = Path(tempfile.mkdtemp(prefix="bench-cri-berth-"))
    write_conflist(root / "cni", "berth")
    (root / "engine.json").write_text(json.dumps({"cri-sandbox-image": PAUSE}))
    try:
        with running_engine("bench-berth-", args=(
                "--config", str(root / "engine.json"), "--cni-conf-dir", str(root / "cni"),
                "--cni-bin-dir", PLUGIN_DIR)) as engine:
            for archive in images:
                engine.docker("load", "-i", str(archive))
            yield Runtime("berth", f"unix://{engine.exec_root}/cri.sock", "busybox:latest",
                          lambda: pids_matching("conmon", str(engine.root)))
    finally:
        kernel.delete_link(BRIDGES["berth"])
        shutil.rmtree(root, ignore_errors=True)


CONTAINERD_CONFIG = """version = 2
root = "{root}/root"
state = "{root}/state"
[grpc]
  address = "{root}/containerd.sock"
[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{plugins}"
    conf_dir = "{root}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{root}/state/runc"
        SystemdCgroup = false
"""


@contextlib.contextmanager
def containerd(images: list[Path]) -> Iterator[Runtime]:
    if shutil.which("containerd") is None:
        raise SystemExit("containerd is missing: apt-get install -y containerd")
    root = Path(tempfile.mkdtemp(prefix="bench-cri-containerd-"))
    write_conflist(root / "cni", "containerd 1.6")
    config = root / "config.toml"
    config.write_text(CONTAINERD_CONFIG.format(root=root, pause=PAUSE, plugins=PLUGIN_DIR))
    sock = root / "containerd.sock"
    process = subprocess.Popen(["containerd", "--config", str(config)],
                               stdout=subprocess.DEVNULL,
                               stderr=(root / "containerd.log").open("wb"),
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for archive in images:
            subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import",
                            str(archive)], check=True, capture_output=True, timeout=120)
        yield Runtime("containerd 1.6", f"unix://{sock}", "docker.io/library/busybox:latest",
                      lambda: pids_matching("containerd-shim-runc-v2", str(sock)))
    finally:
        stop_process(process, group=True)
        for pid in pids_matching("containerd-shim-runc-v2", str(sock)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(root))]
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        kernel.delete_link(BRIDGES["containerd 1.6"])
        # containerd's cgroupfs parent for its k8s.io namespace (rmdir fails while used)
        for parent in Path("/sys/fs/cgroup").glob("*/k8s.io"):
            with contextlib.suppress(OSError):
                parent.rmdir()
        shutil.rmtree(root, ignore_errors=True)


class Pods:
    """Pods made through one runtime's CRI; all removed at the end."""

    def __init__(self, runtime: Runtime, stub: api_pb2_grpc.RuntimeServiceStub) -> None:
        self.runtime = runtime
        self.stub = stub
        self.made: list[str] = []

    def start(self, name: str) -> None:
        config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(
            name=name, namespace="bench", uid=f"uid-{name}"), hostname=name)
        sandbox_id = self.stub.RunPodSandbox(
            cri.RunPodSandboxRequest(config=config)).pod_sandbox_id
        self.made.append(sandbox_id)
        container = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="sleep"),
            image=cri.ImageSpec(image=self.runtime.busybox), command=["sleep", "1000"])
        cid = self.stub.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=container, sandbox_config=config)).container_id
        self.stub.StartContainer(cri.StartContainerRequest(container_id=cid))

    def remove_all(self) -> None:
        for sandbox_id in self.made:
            self.stub.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
            self.stub.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
        self.made.clear()


def measure(runtime: Runtime, runs: int, pods: int) -> dict[str, float]:
    with grpc.insecure_channel(runtime.endpoint) as channel:
        made = Pods(runtime, api_pb2_grpc.RuntimeServiceStub(channel))
        try:
            made.start("warm-up")
            made.remove_all()
            times = []
            for index in range(runs):
                start = time.perf_counter()
                made.start(f"latency-{index}")
                times.append(time.perf_counter() - start)
                made.remove_all()
            for index in range(pods):
                made.start(f"memory-{index}")
            time.sleep(2)
            per_pod = rss_bytes(runtime.per_pod_pids()) / pods
        finally:
            made.remove_all()
    return {"start": statistics.median(times), "memory": per_pod}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pods", type=int, default=10)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-cri-"))
    busybox = busybox_archive(workdir / "busybox.tar")
    pause = workdir / "pause.tar"
    pause.write_bytes(pause_image_archive(PAUSE))
    results: dict[str, dict[str, float]] = {}
    try:
        for make in (berth, containerd):
            with make([busybox, pause]) as runtime:
                results[runtime.name] = measure(runtime, args.runs, args.pods)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ours, theirs = results["berth"], results["containerd 1.6"]
    print(f"{'benchmark':52} {'berth':>10} {'containerd':>10} {'ratio':>7}")
    for label, key, scale in (
            ("RunPodSandbox+CreateContainer+StartContainer, median s", "start", 1),
            ("memory of the per-pod runtime processes, MiB/pod", "memory", 1 / 2**20)):
        print(f"{label:52} {ours[key] * scale:10.3f} {theirs[key] * scale:10.3f} "
              f"{ours[key] / theirs[key]:7.2f}")


if __name__ == "__main__":
    main()
