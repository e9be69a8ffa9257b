"""`berth ctl container`: the container service's gRPC API for operators."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator

from berth.container.v1 import container_pb2, container_pb2_grpc
from berth.types.v1 import types_pb2
from cli.ctl.base import stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("container", help="container service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list containers")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(command=list_containers)
    inspect = verbs.add_parser("inspect", help="show one container")
    inspect.add_argument("id")
    inspect.set_defaults(command=inspect_container)
    run = verbs.add_parser("run", help="create, start and follow a container's output")
    run.add_argument("--name", default="")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    run.add_argument("--network", default="", help="network mode (default: bridge)")
    run.add_argument("image")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    run.set_defaults(command=run_container)
    top = verbs.add_parser("top", help="a running container's processes")
    top.add_argument("id")
    top.add_argument("ps_args", nargs=argparse.REMAINDER, help="ps options (default -ef)")
    top.set_defaults(command=top_container)
    stats = verbs.add_parser("stats", help="a container's resource usage, once")
    stats.add_argument("id")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(command=container_stats)


def _client(config: Config) -> container_pb2_grpc.ContainerServiceStub:
    return stub(config, "container", container_pb2_grpc.ContainerServiceStub)


def list_containers(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).List(container_pb2.ListContainersRequest(all=True))
    if args.json:
        print_json(reply.containers)
        return
    rows = ([c.id[:12], ",".join(n.lstrip("/") for n in c.names), c.image, c.status]
            for c in reply.containers)
    print_table(["ID", "NAME", "IMAGE", "STATUS"], rows)


def inspect_container(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(container_pb2.InspectContainerRequest(id=args.id)))


def run_container(args: argparse.Namespace, config: Config) -> int:
    """Like `docker run` without -d: attach, start, copy output, exit with its code."""
    client = _client(config)
    container_config = container_pb2.ContainerConfig(image=args.image)
    if args.cmd:
        container_config.cmd.CopyFrom(types_pb2.StringList(values=args.cmd))
    cid = client.Create(container_pb2.CreateContainerRequest(
        name=args.name, config=container_config,
        host_config=container_pb2.HostConfig(network_mode=args.network,
                                             auto_remove=args.rm))).id
    done = threading.Event()

    def requests() -> Iterator[container_pb2.AttachRequest]:
        yield container_pb2.AttachRequest(options=container_pb2.AttachOptions(
            id=cid, stdout=True, stderr=True, stream=True))
        done.wait()

    waiting = client.Wait(container_pb2.WaitContainerRequest(id=cid, condition="next-exit"))
    next(waiting)
    frames = client.Attach(requests())
    try:
        next(frames)  # the session is registered: no output is lost after this
        client.Start(container_pb2.StartContainerRequest(id=cid))
        for frame in frames:
            target = sys.stderr if frame.stream == container_pb2.IOFrame.STDERR else sys.stdout
            target.buffer.write(frame.data)
            target.flush()
    finally:
        done.set()
    return next(waiting).status_code


def top_container(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).Top(container_pb2.TopRequest(id=args.id,
                                                          ps_args=" ".join(args.ps_args)))
    print_table(list(reply.titles), (list(row.values) for row in reply.processes))


def container_stats(args: argparse.Namespace, config: Config) -> None:
    """One sample (what `docker stats --no-stream` shows, without CPU %,
    which needs two samples)."""
    sample = next(_client(config).Stats(container_pb2.StatsRequest(id=args.id, one_shot=True)))
    if args.json:
        print_json(sample)
        return
    memory = sample.memory_stats
    print_table(["ID", "NAME", "CPU SECONDS", "MEM USAGE", "MEM LIMIT", "PIDS"],
                [[sample.id[:12], sample.name.lstrip("/"),
                  f"{sample.cpu_stats.cpu_usage.total_usage / 1e9:.2f}", memory.usage,
                  memory.limit, sample.pids_current]])
