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


def refuse_nul(message: Message, what: str) -> None:
    """INVALID_ARGUMENT naming the first field of `message` (a `what`) that
    holds a NUL."""
    field = field_with_nul(message)
    if field:
        raise InvalidArgument(f"invalid {what} {field}: it contains a NUL character")


def field_with_nul(message: Message, path: str = "") -> str | None:
    """The dotted name of the first string field, repeated entry, map key or
    value in `message` (nested messages included) that holds a NUL; None when
    none does. A NUL cannot reach the kernel in a path, a name or an option."""
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                found = _nul_in(key, f"{name}[{key!r}]") or _nul_in(item, f"{name}[{key!r}]")
                if found:
                    return found
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            found = _nul_in(item, name)
            if found:
                return found
    return None


def _nul_in(value: object, name: str) -> str | None:
    if isinstance(value, str):
        return name if "\0" in value else None
    if isinstance(value, Message):
        return field_with_nul(value, f"{name}.")
    return None
