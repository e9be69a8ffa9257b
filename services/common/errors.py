"""Domain errors every service raises, and their gRPC status codes.

Domain code raises these (it never imports grpc); the interceptor
(interceptors.py) turns them into gRPC statuses and the gateway turns those into HTTP codes.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger("berth.peers")


class BerthError(Exception):
    """Base of errors a user can cause; the message is shown to them as is."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(BerthError):
    code = grpc.StatusCode.NOT_FOUND


class Conflict(BerthError):
    """The object exists or is in a state that forbids the call (HTTP 409)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(BerthError):
    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(BerthError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(BerthError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BerthError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(BerthError):
    code = grpc.StatusCode.UNIMPLEMENTED


class DeadlineExceeded(BerthError):
    """An operation that outlived the time its caller gave it."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


# How the container service (as dockerd) begins the error of a start runc
# refused; the cri service recognises it to answer as containerd does.
RUNTIME_CREATE_FAILED = "failed to create task for container: "


class RuntimeRefused(BerthError):
    """The OCI runtime refused a container at start, in runc's words:
    UNKNOWN, the code containerd's CRI answers with (kubelet shows the
    message as the container's or pod's failure reason)."""

    code = grpc.StatusCode.UNKNOWN


class Internal(BerthError):
    """A failure outside the user's control (a registry that is down, a
    runtime that fails): HTTP 500. Never UNAVAILABLE, which the gateway
    reserves for a berth service that cannot be reached."""

    code = grpc.StatusCode.INTERNAL


class PeerUnavailable(Internal):
    """A peer service that cannot be reached. An Internal error to whoever
    calls the service that saw it; the gateway answers 503 naming `service`."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} service unavailable")
        self.service = service


_BY_CODE = {cls.code: cls for cls in BerthError.__subclasses__()}


def from_rpc(service: str, error: grpc.aio.AioRpcError) -> BerthError:
    """A peer service's gRPC error as the domain error of the same code, so it
    reaches the user with its message and status. A peer that cannot be
    reached is an Internal error here: UNAVAILABLE stays reserved for "this
    service cannot be reached". A peer's unexpected exception (UNKNOWN) is
    an Internal error whose text is only logged."""
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return PeerUnavailable(service)
    if error.code() == grpc.StatusCode.UNKNOWN:
        # An exception the peer did not expect: its text (a Python exception,
        # often with host paths) goes to the log, never on to a user.
        log.error("unexpected error in the %s service: %s", service, error.details())
        return Internal(f"internal error in the berth {service} service")
    return _BY_CODE.get(error.code(), Internal)(error.details() or error.code().name.lower())
