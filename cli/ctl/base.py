"""Plumbing shared by the ctl modules: stubs over a blocking channel, errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import grpc

from berth.types.v1 import types_pb2
from services.common.config import Config
from services.common.peers import sync_channel


def stub(config: Config, service: str, stub_class: type) -> Any:
    return stub_class(sync_channel(config, service))


def key_values(items: list[str]) -> dict[str, str]:
    """Repeated K=V options (--label, --opt) as a dict."""
    return dict(item.partition("=")[::2] for item in items)


def parse_filters(items: list[str]) -> types_pb2.Filters:
    """Repeated --filter KEY=VALUE options as the shared Filters message."""
    result = types_pb2.Filters()
    for item in items:
        key, _, value = item.partition("=")
        result.filters[key].values.append(value)
    return result


def run_command(command: Callable[[], int | None]) -> int:
    """Run a ctl command; a gRPC error becomes one line on stderr and exit 1."""
    try:
        return command() or 0
    except grpc.RpcError as error:
        print(f"berth: {error.details()} ({error.code().name})", file=sys.stderr)
        return 1
