"""`berth ctl image`: the image service's gRPC API for operators."""

from __future__ import annotations

import argparse

from berth.image.v1 import image_pb2, image_pb2_grpc
from cli.ctl.base import stub
from cli.ctl.output import print_json, print_table
from services.common.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("image", help="image service")
    verbs = parser.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("ls", help="list images")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(command=list_images)
    inspect = verbs.add_parser("inspect", help="show one image")
    inspect.add_argument("name")
    inspect.set_defaults(command=inspect_image)


def _client(config: Config) -> image_pb2_grpc.ImageServiceStub:
    return stub(config, "image", image_pb2_grpc.ImageServiceStub)


def list_images(args: argparse.Namespace, config: Config) -> None:
    reply = _client(config).List(image_pb2.ListImagesRequest())
    if args.json:
        print_json(reply.images)
        return
    rows = ([i.id.removeprefix("sha256:")[:12], ",".join(i.repo_tags) or "<none>", i.size]
            for i in reply.images)
    print_table(["ID", "TAGS", "SIZE"], rows)


def inspect_image(args: argparse.Namespace, config: Config) -> None:
    print_json(_client(config).Inspect(image_pb2.InspectImageRequest(name=args.name)))
