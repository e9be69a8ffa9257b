"""Query-string parsing as Docker's httputils does it."""

from __future__ import annotations

import json

from aiohttp import web

from berth.types.v1 import types_pb2
from services.common.errors import InvalidArgument
from services.common.filters import timestamp_ns
from services.gateway.errors import bad_request


def boolean(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's BoolValue: absent -> default; "", "0", "no", "false", "none" -> False."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in ("", "0", "no", "false", "none")


def integer(request: web.Request, name: str, default: int = 0) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_request(f"invalid value for {name}: {raw!r}") from exc


def timestamp(request: web.Request, name: str, now_ns: int) -> int:
    """A time parameter (`since`, `until` of events and logs) in nanoseconds,
    in any form `docker` takes (a duration back from `now_ns`, RFC 3339, Unix
    seconds); 0 when absent."""
    raw = request.query.get(name, "")
    if not raw:
        return 0
    try:
        return timestamp_ns(raw, now_ns)
    except InvalidArgument as exc:
        raise bad_request(f"invalid value for {name}: {exc.message}") from exc


def filters(request: web.Request) -> types_pb2.Filters:
    """Decode ?filters= (both {"k": ["v"]} and the old {"k": {"v": true}})."""
    raw = request.query.get("filters", "")
    result = types_pb2.Filters()
    if not raw:
        return result
    try:
        decoded = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"invalid filter: {exc}") from exc
    if not isinstance(decoded, dict):
        raise bad_request("invalid filter: expected a JSON object")
    for key, values in decoded.items():
        if isinstance(values, dict):
            values = [v for v, enabled in values.items() if enabled]
        elif isinstance(values, str):
            values = [values]
        result.filters[key].values.extend(str(v) for v in values)
    return result
