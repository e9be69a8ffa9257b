"""Domain errors every service raises, and their gRPC status codes.

Domain code raises these; the server wrapper turns them into gRPC statuses
and the gateway turns those into HTTP codes. Codes are grpc.StatusCode
names, so this module does not import grpc: the chrooted archive helper
imports it and starts in a fraction of the time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class BerthError(Exception):
    """Base of errors a user can cause; the message is shown to them as is."""

    code = "UNKNOWN"   # a grpc.StatusCode name

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(BerthError):
    code = "NOT_FOUND"


class Conflict(BerthError):
    """The object exists or is in a state that forbids the call (HTTP 409)."""

    code = "FAILED_PRECONDITION"


class AlreadyExists(BerthError):
    code = "ALREADY_EXISTS"


class InvalidArgument(BerthError):
    code = "INVALID_ARGUMENT"


class Unauthenticated(BerthError):
    code = "UNAUTHENTICATED"


class PermissionDenied(BerthError):
    code = "PERMISSION_DENIED"


class Unimplemented(BerthError):
    code = "UNIMPLEMENTED"


class Internal(BerthError):
    """A failure outside the user's control (a registry that is down, a
    runtime that fails): HTTP 500. Never UNAVAILABLE, which the gateway
    reserves for a berth service that cannot be reached."""

    code = "INTERNAL"


_BY_CODE = {cls.code: cls for cls in BerthError.__subclasses__()}


def from_rpc(service: str, error: grpc.aio.AioRpcError) -> BerthError:
    """A peer service's gRPC error as the domain error of the same code, so it
    reaches the user with its message and status. A peer that cannot be
    reached is an Internal error here: UNAVAILABLE stays reserved for "this
    service cannot be reached"."""
    if error.code().name == "UNAVAILABLE":
        return Internal(f"{service} service unavailable")
    return _BY_CODE.get(error.code().name, Internal)(error.details() or error.code().name.lower())
