"""`berth ctl image`: the image service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.types.v1 import types_pb2
from cli.ctl.base import parse_filters, stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image", help="image service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list images")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--all", "-a", action="store_true", help="intermediate images too")
    ls.add_argument("--filter", action="append", default=[], help="KEY=VALUE")
    ls.set_defaults(command=list_images)
    inspect = verbs.add_parser("inspect", help="show one image")
    inspect.add_argument("name")
    inspect.set_defaults(command=inspect_image)
    pull = verbs.add_parser("pull", help="pull an image from a registry")
    pull.add_argument("reference")
    pull.add_argument("--platform", default="")
    pull.add_argument("--username", "-u", default="")
    pull.add_argument("--password", "-p", default="")
    pull.set_defaults(command=pull_image)
    rm = verbs.add_parser("rm", help="remove images")
    rm.add_argument("names", nargs="+")
    rm.add_argument("--force", "-f", action="store_true")
    rm.add_argument("--no-prune", action="store_true")
    rm.set_defaults(command=remove_images)


def _client(config: Config) -> image_pb2_grpc.ImageServiceStub:
    return stub(config, "image", image_pb2_grpc.ImageServiceStub)


def list_images(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).List(image_pb2.ListImagesRequest(
        all=args.all, filters=parse_filters(args.filter)))
    if args.json:
        print_json(reply.images)
        return
    rows = ([i.id.removeprefix("sha256:")[:12], ",".join(i.repo_tags) or "<none>", i.size]
            for i in reply.images)
    print_table(["ID", "TAGS", "SIZE"], rows)


def inspect_image(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(image_pb2.InspectImageRequest(name=args.name)))


def pull_image(args: argparse.Namespace, config: Config) -> None:
    auth = types_pb2.RegistryAuth(username=args.username, password=args.password)
    request = image_pb2.PullRequest(reference=args.reference, platform=args.platform,
                                    auth=auth)
    for message in _client(config).Pull(request):
        if message.status.startswith(("Downloading", "Extracting")):
            continue
        line = f"{message.id}: {message.status}" if message.id else message.status
        print(line, flush=True)


def remove_images(args: argparse.Namespace, config: Config) -> None:
    client = _client(config)
    for name in args.names:
        reply = client.Remove(image_pb2.RemoveImageRequest(
            name=name, force=args.force, no_prune=args.no_prune))
        for item in reply.items:
            print(f"Untagged: {item.untagged}" if item.untagged else f"Deleted: {item.deleted}")
