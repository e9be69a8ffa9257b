"""Checks every service shares: request fields marked
`[(berth.types.v1.required) = true]`, and Docker's rule for object names.

The interceptor runs check_required on every unary request, so a missing
field is INVALID_ARGUMENT naming it, before any service code runs.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from berth.types.v1 import types_pb2
from services.common.errors import InvalidArgument


def _is_required(field: FieldDescriptor) -> bool:
    return field.GetOptions().Extensions[types_pb2.required]


def check_required(message: Message, path: str = "") -> None:
    """Raise InvalidArgument for the first required field that is empty."""
    for field in message.DESCRIPTOR.fields:
        name = f"{path}{field.name}"
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        is_repeated = field.is_repeated
        if _is_required(field):
            present = (len(getattr(message, field.name)) > 0 if is_repeated
                       else message.HasField(field.name) if is_message
                       else getattr(message, field.name) not in ("", 0, b""))
            if not present:
                raise InvalidArgument(f"{name} is required")
        if is_message and not is_repeated and message.HasField(field.name):
            check_required(getattr(message, field.name), f"{name}.")


# moby's daemon/names: the names users give containers, volumes and networks.
RESTRICTED_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_RESTRICTED_NAME = re.compile(f"{RESTRICTED_NAME_CHARS}+")


def is_restricted_name(name: str) -> bool:
    return _RESTRICTED_NAME.fullmatch(name) is not None


def is_interface_name(name: str) -> bool:
    """What the kernel takes as a link name (dev_valid_name): 1 to 15 bytes,
    not "." or "..", no "/", ":", whitespace or NUL."""
    return (0 < len(name.encode()) < 16 and name not in (".", "..")
            and not any(c in "/:\0" or c.isspace() for c in name))
