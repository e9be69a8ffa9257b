"""The gateway's aiohttp application: version prefixes, errors, metrics.

Routes come from one module per Docker object (like moby's router); each
module exposes `routes(backends) -> list[Route]`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import Counter, Histogram

from services.common.errors import BerthError, PeerUnavailable
from services.common.version import API_VERSION, MIN_API_VERSION
from services.gateway import (
    build,
    containers,
    containers_files_and_resources,
    exec,
    images,
    networks,
    system,
    unserved,
    volumes,
)
from services.gateway.backends import Backends
from services.gateway.errors import HTTP_STATUS, HTTPError, error_response
from services.gateway.params import parse_api_version
from services.gateway.routing import Handler
from services.gateway.streams import client_gone

log = logging.getLogger("berth.gateway")

HTTP_REQUESTS = Counter(
    "berth_http_requests_total", "Docker API requests by route template, method and status.",
    ["route", "method", "code"])
HTTP_SECONDS = Histogram(
    "berth_http_request_duration_seconds", "Docker API request latency by route template.",
    ["route", "method"],
    buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))

VERSION_PREFIX = r"/v{version:[0-9]+\.[0-9]+}"
# nginx's status for a client that went away before it had an answer.
CLIENT_CLOSED_REQUEST = 499
INTERNAL_ERROR = "internal error in the berth gateway"
ROUTE_MODULES = (system, containers, containers_files_and_resources, exec, images, networks,
                 volumes, build, unserved)


def _check_version(request: web.Request) -> None:
    requested = request.match_info.get("version")
    if not requested:
        return
    if parse_api_version(requested) > parse_api_version(API_VERSION):
        raise HTTPError(400, f"client version {requested} is too new. "
                             f"Maximum supported API version is {API_VERSION}")
    if parse_api_version(requested) < parse_api_version(MIN_API_VERSION):
        raise HTTPError(400, f"client version {requested} is too old. Minimum supported API "
                             f"version is {MIN_API_VERSION}, please upgrade your client to a "
                             f"newer version")


def _route_template(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    if resource is None:
        return "unmatched"
    # aiohttp's canonical form drops the pattern: "/v{version}/events".
    return resource.canonical.removeprefix("/v{version}")


def _left_early(request: web.Request) -> web.StreamResponse:
    """What a request whose client went away counts as: the response whose
    headers it already had, else 499. aiohttp's writes of it fail quietly."""
    started = request.get("started_response")
    return started if started is not None else web.Response(status=CLIENT_CLOSED_REQUEST)


async def _remember_started(request: web.Request, response: web.StreamResponse) -> None:
    request["started_response"] = response


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Docker's error shape and status codes, and per-route HTTP metrics. A
    client that goes away is no error: no traceback, counted as what it got."""
    start = time.perf_counter()
    route = _route_template(request)
    status = 500
    try:
        _check_version(request)
        response = await handler(request)
        status = response.status
        return response
    except HTTPError as exc:
        status = exc.status
        return error_response(exc.status, exc.message)
    except PeerUnavailable as exc:
        status = 503
        return error_response(503, exc.message)
    except BerthError as exc:
        status = HTTP_STATUS.get(exc.code, 500)
        return error_response(status, exc.message)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status in (404, 405):
            status = 404
            return error_response(404, "page not found")
        raise
    except asyncio.CancelledError:
        # A gRPC call the handler cancelled because its client left raises
        # this too; only a cancellation of the handler itself goes on.
        response = _left_early(request)
        status = response.status
        task = asyncio.current_task()
        if (task is not None and task.cancelling()) or not client_gone(request):
            raise
        return response
    except ConnectionError:
        if client_gone(request):
            response = _left_early(request)
            status = response.status
            return response
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, INTERNAL_ERROR)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, INTERNAL_ERROR)
    finally:
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_SECONDS.labels(route, request.method).observe(time.perf_counter() - start)


def make_app(backends: Backends) -> web.Application:
    app = web.Application(middlewares=[observe], client_max_size=0,
                          handler_args={"max_field_size": 65536})
    app["backends"] = backends
    app.on_response_prepare.append(_remember_started)
    for module in ROUTE_MODULES:
        for route in module.routes(backends):
            for path in (route.path, VERSION_PREFIX + route.path):
                app.router.add_route(route.method, path, route.handler)
    return app
