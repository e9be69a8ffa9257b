"""`berth ctl build`: the build service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.build.v1 import build_pb2, build_pb2_grpc
from cli.ctl.base import stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("build", help="build service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    du = verbs.add_parser("du", help="build cache records")
    du.add_argument("--json", action="store_true")
    du.set_defaults(command=disk_usage)


def disk_usage(args: argparse.Namespace, config: Config) -> None:
    client = stub(config, "build", build_pb2_grpc.BuildServiceStub)
    reply = client.DiskUsage(build_pb2.BuildDiskUsageRequest())
    if args.json:
        print_json(reply.records)
        return
    print_table(["ID", "SIZE", "LAST USED"],
                ([r.id[:12], r.size, r.last_used_at] for r in reply.records))
