"""`berth ctl volume`: the volume service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from cli.ctl.base import stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("volume", help="volume service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list volumes")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(command=list_volumes)
    inspect = verbs.add_parser("inspect", help="show one volume")
    inspect.add_argument("name")
    inspect.set_defaults(command=inspect_volume)


def _client(config: Config) -> volume_pb2_grpc.VolumeServiceStub:
    return stub(config, "volume", volume_pb2_grpc.VolumeServiceStub)


def list_volumes(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).List(volume_pb2.ListVolumesRequest())
    if args.json:
        print_json(reply.volumes)
        return
    print_table(["DRIVER", "NAME"], ([v.driver, v.name] for v in reply.volumes))


def inspect_volume(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(volume_pb2.InspectVolumeRequest(name=args.name)))
