"""`berth ctl container`: the container service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.container.v1 import container_pb2, container_pb2_grpc
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
