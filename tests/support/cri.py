"""What the CRI test modules share: the pause image their sandboxes run,
and taking down the pods a test ran."""

from __future__ import annotations

from pathlib import Path

from k8s.runtime.v1 import api_pb2 as cri
from k8s.runtime.v1 import api_pb2_grpc
from tests.support.engine import Engine
from tests.support.images import busybox_rootfs_tar, image_archive

PAUSE_IMAGE = "berth-test/pause:1"


def pause_image_archive(repo_tag: str = PAUSE_IMAGE) -> bytes:
    """A pause image: busybox sleeping for ever, as a docker-archive tar."""
    return image_archive([busybox_rootfs_tar()], [repo_tag], {"Cmd": ["sleep", "2147483647"]})


def load_pause_image(engine: Engine, directory: Path) -> None:
    archive = directory / "pause.tar"
    archive.write_bytes(pause_image_archive())
    engine.docker("load", "-i", str(archive))


def remove_pods(runtime: api_pb2_grpc.RuntimeServiceStub, sandbox_ids: list[str]) -> None:
    """Stop and remove each sandbox, as kubelet tears a pod down."""
    for sandbox_id in sandbox_ids:
        runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
