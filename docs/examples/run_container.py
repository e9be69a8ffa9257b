"""Pull an image, run a container, follow its logs and wait for it — over
berth's gRPC services, without the Docker gateway.

    python docs/examples/run_container.py [--exec-root /run/berth] IMAGE CMD...

Each service listens on unix://<exec-root>/<service>.sock; the generated
stubs are the importable `berth.<service>.v1` packages.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from berth.container.v1 import container_pb2, container_pb2_grpc
from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.types.v1 import types_pb2


def connect(exec_root: str, service: str) -> grpc.Channel:
    return grpc.insecure_channel(f"unix://{exec_root}/{service}.sock")


def pull(images: image_pb2_grpc.ImageServiceStub, reference: str) -> None:
    """Pull, printing the progress messages; an error ends the stream."""
    for progress in images.Pull(image_pb2.PullRequest(reference=reference)):
        if progress.error:
            sys.exit(f"pull failed: {progress.error}")
        if progress.status:
            print(f"{progress.id} {progress.status}".strip(), file=sys.stderr)


def run(containers: container_pb2_grpc.ContainerServiceStub, image: str,
        command: list[str]) -> int:
    """Create and start a container, stream its output, return its exit code."""
    config = container_pb2.ContainerConfig(
        image=image, cmd=types_pb2.StringList(values=command),
        attach_stdout=True, attach_stderr=True)
    created = containers.Create(container_pb2.CreateContainerRequest(config=config))
    try:
        # Register the wait before starting, so a fast exit cannot be missed.
        waiter = containers.Wait(container_pb2.WaitContainerRequest(
            id=created.id, condition="next-exit"))
        next(waiter)
        containers.Start(container_pb2.StartContainerRequest(id=created.id))
        logs = container_pb2.LogsRequest(id=created.id, follow=True, stdout=True, stderr=True)
        for entry in containers.Logs(logs):
            out = sys.stdout if entry.stream == container_pb2.IOFrame.STDOUT else sys.stderr
            out.buffer.write(entry.data)
            out.flush()
        return next(waiter).status_code
    finally:
        containers.Remove(container_pb2.RemoveContainerRequest(id=created.id, force=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exec-root", default="/run/berth")
    parser.add_argument("image")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    with connect(args.exec_root, "image") as image_channel, \
            connect(args.exec_root, "container") as container_channel:
        pull(image_pb2_grpc.ImageServiceStub(image_channel), args.image)
        return run(container_pb2_grpc.ContainerServiceStub(container_channel),
                   args.image, args.command)


if __name__ == "__main__":
    sys.exit(main())
