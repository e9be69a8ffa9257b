"""`berth ctl volume`: the volume service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from cli.ctl.base import key_values, parse_filters, stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("volume", help="volume service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list volumes")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--filter", action="append", default=[], help="KEY=VALUE")
    ls.add_argument("--usage", action="store_true", help="compute sizes and lease counts")
    ls.set_defaults(command=list_volumes)
    inspect = verbs.add_parser("inspect", help="show one volume")
    inspect.add_argument("name")
    inspect.set_defaults(command=inspect_volume)
    create = verbs.add_parser("create", help="create a volume")
    create.add_argument("name", nargs="?", default="")
    create.add_argument("--driver", "-d", default="local")
    create.add_argument("--opt", "-o", action="append", default=[], help="driver option K=V")
    create.add_argument("--label", action="append", default=[], help="label K=V")
    create.set_defaults(command=create_volume)
    rm = verbs.add_parser("rm", help="remove volumes")
    rm.add_argument("names", nargs="+")
    rm.add_argument("--force", "-f", action="store_true")
    rm.set_defaults(command=remove_volumes)
    prune = verbs.add_parser("prune", help="remove unused volumes")
    prune.add_argument("--all", "-a", action="store_true", help="named volumes too")
    prune.add_argument("--filter", action="append", default=[], help="KEY=VALUE")
    prune.set_defaults(command=prune_volumes)


def _client(config: Config) -> volume_pb2_grpc.VolumeServiceStub:
    return stub(config, "volume", volume_pb2_grpc.VolumeServiceStub)


def list_volumes(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).List(volume_pb2.ListVolumesRequest(
        filters=parse_filters(args.filter), usage=args.usage))
    if args.json:
        print_json(reply.volumes)
        return
    if args.usage:
        print_table(["DRIVER", "NAME", "SIZE", "LEASES"],
                    ([v.driver, v.name, v.usage_data.size, v.usage_data.ref_count]
                     for v in reply.volumes))
        return
    print_table(["DRIVER", "NAME"], ([v.driver, v.name] for v in reply.volumes))


def inspect_volume(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(volume_pb2.InspectVolumeRequest(name=args.name)))


def create_volume(args: argparse.Namespace, config: Config) -> None:
    volume = _client(config).Create(volume_pb2.CreateVolumeRequest(
        name=args.name, driver=args.driver, driver_opts=key_values(args.opt),
        labels=key_values(args.label)))
    print(volume.name)


def remove_volumes(args: argparse.Namespace, config: Config) -> None:
    client = _client(config)
    for name in args.names:
        client.Remove(volume_pb2.RemoveVolumeRequest(name=name, force=args.force))
        print(name)


def prune_volumes(args: argparse.Namespace, config: Config) -> None:
    filters = parse_filters(args.filter)
    if args.all:
        filters.filters["all"].values.append("true")
    reply = _client(config).Prune(volume_pb2.PruneVolumesRequest(filters=filters))
    for name in reply.deleted:
        print(name)
    print(f"Total reclaimed space: {reply.space_reclaimed} B")
