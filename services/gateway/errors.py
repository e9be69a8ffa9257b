"""HTTP errors in Docker's shape: {"message": "..."} with Docker's codes."""

from __future__ import annotations

import json

import grpc
from aiohttp import web

HTTP_STATUS = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def error_response(status: int, message: str) -> web.Response:
    # Exactly "application/json": the docker CLI shows any other type raw.
    return web.Response(body=json.dumps({"message": message}).encode(), status=status,
                        content_type="application/json")


class HTTPError(Exception):
    """Raised by handlers for errors the gateway itself detects."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)

