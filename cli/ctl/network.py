"""`berth ctl network`: the network service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.network.v1 import network_pb2, network_pb2_grpc
from cli.ctl.base import key_values, parse_filters, stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("network", help="network service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list networks")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--filter", action="append", default=[], help="KEY=VALUE")
    ls.set_defaults(command=list_networks)
    inspect = verbs.add_parser("inspect", help="show one network")
    inspect.add_argument("id")
    inspect.set_defaults(command=inspect_network)
    create = verbs.add_parser("create", help="create a bridge network")
    create.add_argument("name")
    create.add_argument("--driver", "-d", default="bridge")
    create.add_argument("--subnet", default="")
    create.add_argument("--gateway", default="")
    create.add_argument("--ip-range", default="")
    create.add_argument("--internal", action="store_true")
    create.add_argument("--attachable", action="store_true")
    create.add_argument("--opt", "-o", action="append", default=[], help="driver option K=V")
    create.add_argument("--label", action="append", default=[], help="label K=V")
    create.set_defaults(command=create_network)
    rm = verbs.add_parser("rm", help="remove networks")
    rm.add_argument("ids", nargs="+")
    rm.set_defaults(command=remove_networks)


def _client(config: Config) -> network_pb2_grpc.NetworkServiceStub:
    return stub(config, "network", network_pb2_grpc.NetworkServiceStub)


def list_networks(args: argparse.Namespace, config: Config) -> None:
    request = network_pb2.ListNetworksRequest(filters=parse_filters(args.filter))
    reply = _client(config).List(request)
    if args.json:
        print_json(reply.networks)
        return
    rows = ([n.id[:12], n.name, n.driver, n.scope,
             ",".join(c.subnet for c in n.ipam.config)] for n in reply.networks)
    print_table(["ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], rows)


def inspect_network(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(network_pb2.InspectNetworkRequest(id=args.id)))


def create_network(args: argparse.Namespace, config: Config) -> None:
    ipam = network_pb2.IPAM(driver="default")
    if args.subnet:
        ipam.config.append(network_pb2.IPAMConfig(subnet=args.subnet, gateway=args.gateway,
                                                  ip_range=args.ip_range))
    reply = _client(config).Create(network_pb2.CreateNetworkRequest(
        name=args.name, driver=args.driver, internal=args.internal,
        attachable=args.attachable, ipam=ipam, options=key_values(args.opt),
        labels=key_values(args.label)))
    print(reply.id)


def remove_networks(args: argparse.Namespace, config: Config) -> None:
    client = _client(config)
    for network in args.ids:
        client.Remove(network_pb2.RemoveNetworkRequest(id=network))
        print(network)
