"""`berth ctl build`: the build service's gRPC API for operators."""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from berth.build.v1 import build_pb2, build_pb2_grpc
from cli.ctl.base import key_values, stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config

_CHUNK = 1 << 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build", help="build service: `build PATH -t NAME`, `build du`, `build prune`",
        description="Build the context directory PATH; `du` lists the build cache, "
                    "`prune` removes it (use ./du for a directory of that name).")
    parser.add_argument("path", metavar="PATH|du|prune")
    parser.add_argument("-t", "--tag", action="append", default=[])
    parser.add_argument("-f", "--file", default="")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--target", default="")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--pull", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--json", action="store_true", help="du: JSON output")
    parser.set_defaults(command=dispatch)


def dispatch(args: argparse.Namespace, config: Config) -> int | None:
    verbs = {"du": disk_usage, "prune": prune_cache}
    return verbs.get(args.path, run_build)(args, config)


def _client(config: Config) -> build_pb2_grpc.BuildServiceStub:
    return stub(config, "build", build_pb2_grpc.BuildServiceStub)


def _requests(options: build_pb2.BuildOptions, context_dir: Path
              ) -> Iterator[build_pb2.BuildRequest]:
    """The options, then the directory as a tar (the service applies .dockerignore)."""
    yield build_pb2.BuildRequest(options=options)
    with tempfile.TemporaryFile() as spool:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            tar.add(context_dir, arcname=".")
        spool.seek(0)
        while chunk := spool.read(_CHUNK):
            yield build_pb2.BuildRequest(context=chunk)


def run_build(args: argparse.Namespace, config: Config) -> int:
    build_args = key_values(args.build_arg)
    options = build_pb2.BuildOptions(
        dockerfile=args.file, tags=args.tag, build_args=build_args, target=args.target,
        no_cache=args.no_cache, pull=args.pull, quiet=args.quiet, remove=True)
    for message in _client(config).Build(_requests(options, Path(args.path))):
        if message.stream:
            sys.stdout.write(message.stream)
        elif message.status:
            print(f"{message.id}: {message.status}" if message.id else message.status)
    return 0


def disk_usage(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).DiskUsage(build_pb2.BuildDiskUsageRequest())
    if args.json:
        print_json(reply.records)
        return
    print_table(["ID", "SIZE", "LAST USED", "DESCRIPTION"],
                ([r.id[:12], r.size, r.last_used_at, r.description[:60]]
                 for r in reply.records))


def prune_cache(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).Prune(build_pb2.PruneBuildCacheRequest(all=True))
    print(f"Deleted build cache objects: {len(reply.caches_deleted)}")
    print(f"Total reclaimed space: {reply.space_reclaimed}B")
