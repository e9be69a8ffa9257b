"""`berth ctl network`: the network service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.network.v1 import network_pb2, network_pb2_grpc
from cli.ctl.base import stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("network", help="network service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list networks")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(command=list_networks)
    inspect = verbs.add_parser("inspect", help="show one network")
    inspect.add_argument("id")
    inspect.set_defaults(command=inspect_network)


def _client(config: Config) -> network_pb2_grpc.NetworkServiceStub:
    return stub(config, "network", network_pb2_grpc.NetworkServiceStub)


def list_networks(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).List(network_pb2.ListNetworksRequest())
    if args.json:
        print_json(reply.networks)
        return
    rows = ([n.id[:12], n.name, n.driver, n.scope]
            for n in reply.networks)
    print_table(["ID", "NAME", "DRIVER", "SCOPE"], rows)


def inspect_network(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(network_pb2.InspectNetworkRequest(id=args.id)))
