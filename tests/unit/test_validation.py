"""Required request fields are refused with INVALID_ARGUMENT naming them."""

from __future__ import annotations

import pytest

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from services.common.errors import InvalidArgument
from services.common.validation import check_required


def test_missing_field_is_named() -> None:
    with pytest.raises(InvalidArgument, match="^id is required$"):
        check_required(container_pb2.InspectContainerRequest())


def test_nested_required_field_is_named_with_its_path() -> None:
    request = network_pb2.ConnectRequest(container_id="c1", endpoint=network_pb2.EndpointRequest())
    with pytest.raises(InvalidArgument, match="^endpoint.network is required$"):
        check_required(request)


def test_complete_request_passes() -> None:
    check_required(container_pb2.RenameContainerRequest(id="abc", name="web"))
    check_required(network_pb2.ConnectRequest(
        container_id="c1", endpoint=network_pb2.EndpointRequest(network="n")))
