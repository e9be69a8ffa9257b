"""Request parameters as Docker's httputils reads them: the API version in
the path, the query string (booleans, integers, filters, timestamps), and
JSON bodies checked field by field against the Go types of Docker's API.

Every route reads its JSON body through `json_body`: the body is read with a
bound, decoded, and then each field is taken with the type Docker declares
for it. A value of another type, or an integer outside its Go type's range,
is a 400 worded as Go's encoding/json words it, so nothing malformed reaches
a service (or a protobuf constructor).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from berth.types.v1 import types_pb2
from services.common.errors import InvalidArgument
from services.common.filters import timestamp_ns
from services.common.version import API_VERSION
from services.gateway.errors import HTTPError, bad_request

ApiVersion = tuple[int, int]

# Docker sets no limit; berth's JSON bodies are configs of a few KiB, and a
# bound keeps one request from holding the gateway's memory. Streams
# (build contexts, load, import, archives) are not JSON and have no bound.
MAX_JSON_BODY = 4 << 20

_DECIMAL = re.compile(r"[+-]?[0-9]+")

INTEGER_RANGES = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint64": (0, (1 << 64) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint16": (0, (1 << 16) - 1),
    "os.FileMode": (0, (1 << 32) - 1),
}


def parse_api_version(text: str) -> ApiVersion:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


LATEST_API_VERSION = parse_api_version(API_VERSION)


def api_version(request: web.Request) -> ApiVersion:
    """The version the path names (/v1.44/...), else the latest."""
    requested = request.match_info.get("version")
    return parse_api_version(requested) if requested else LATEST_API_VERSION


def boolean(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's BoolValue: absent -> default; "", "0", "no", "false", "none" -> False."""
    if name not in request.query:
        return default
    return request.query[name].strip().lower() not in ("", "0", "no", "false", "none")


def integer(request: web.Request, name: str, default: int = 0, go_type: str = "int") -> int:
    """An integer query parameter within the range of its Go type (or of the
    proto field it fills, when that is narrower), worded as strconv words it."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    return parse_integer(raw, go_type, f"invalid value for {name}")


def parse_integer(raw: str, go_type: str, context: str) -> int:
    low, high = INTEGER_RANGES[go_type]
    if not _DECIMAL.fullmatch(raw):
        raise bad_request(f'{context} "{raw}": invalid syntax')
    value = int(raw)
    if not low <= value <= high:
        raise bad_request(f'{context} "{raw}": value out of range')
    return value


def terminal_size(request: web.Request) -> dict[str, int]:
    """?h=&w= of a resize, both required unsigned 32-bit integers as in moby."""
    return {"height": parse_integer(request.query.get("h", ""), "uint32",
                                    "invalid resize height"),
            "width": parse_integer(request.query.get("w", ""), "uint32",
                                   "invalid resize width")}


def timestamp(request: web.Request, name: str, now_ns: int) -> int:
    """A time parameter (`since`, `until` of events and logs) in nanoseconds,
    in any form `docker` takes (a duration back from `now_ns`, RFC 3339, Unix
    seconds); 0 when absent."""
    raw = request.query.get(name, "")
    if not raw:
        return 0
    try:
        nanos = timestamp_ns(raw, now_ns)
    except InvalidArgument as exc:
        raise bad_request(f"invalid value for {name}: {exc.message}") from exc
    low, high = INTEGER_RANGES["int64"]
    if not low <= nanos <= high:
        raise bad_request(f'invalid value for {name}: "{raw}": value out of range')
    return nanos


def filters(request: web.Request) -> types_pb2.Filters:
    """Decode ?filters= (both {"k": ["v"]} and the old {"k": {"v": true}})."""
    raw = request.query.get("filters", "")
    result = types_pb2.Filters()
    if not raw:
        return result
    decoded = _decode(raw.encode(), "invalid filter")
    if not isinstance(decoded, dict):
        raise bad_request("invalid filter: expected a JSON object")
    for key, values in decoded.items():
        if isinstance(values, dict):
            values = [v for v, enabled in values.items() if enabled]
        elif isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise bad_request(f"invalid filter '{key}': expected a list of strings")
        result.filters[key].values.extend(values)
    return result


def query_json(request: web.Request, name: str) -> Any:
    """A query parameter holding JSON (build's buildargs, labels, cachefrom);
    None when absent."""
    raw = request.query.get(name, "")
    return _decode(raw.encode(), f"error reading {name}") if raw else None


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _decode(raw: bytes, context: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request(f"{context}: JSON nested too deeply") from None
    except ValueError as exc:
        raise bad_request(f"{context}: {exc}") from None


async def read_bounded(request: web.Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The whole request body, refused with 413 past `limit` bytes (read
    piece by piece, so a huge body is never held)."""
    too_large = HTTPError(413, f"request body too large: JSON bodies are limited to "
                               f"{limit >> 20} MiB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    pieces: list[bytes] = []
    size = 0
    async for piece in request.content.iter_any():
        size += len(piece)
        if size > limit:
            raise too_large
        pieces.append(piece)
    return b"".join(pieces)


async def json_body(request: web.Request, go_type: str) -> Fields:
    """The request's JSON object (an empty body or null is an empty one)."""
    raw = await read_bounded(request)
    decoded = _decode(raw, "invalid JSON") if raw.strip() else None
    return Fields.of(decoded, go_type)


def _kind(value: Any) -> str:
    """The JSON kind as Go's UnmarshalTypeError names it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}"
    return "array" if isinstance(value, list) else "object"


def _short_name(go_type: str) -> str:
    return go_type.rpartition(".")[2]


class Fields:
    """A JSON object read field by field with Go's types. `struct` and
    `path` only word the errors, as Go does: "Go struct field
    HostConfig.HostConfig.Memory of type int64"."""

    def __init__(self, data: dict[str, Any], struct: str, path: str = "") -> None:
        self.data = data
        self.struct = struct
        self.path = path

    @classmethod
    def of(cls, value: Any, go_type: str) -> Fields:
        """A top-level value that must be an object of `go_type`."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise bad_request(f"json: cannot unmarshal {_kind(value).split()[0]} into Go "
                              f"value of type {go_type}")
        return cls(value, _short_name(go_type))

    def __bool__(self) -> bool:
        return bool(self.data)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _fail(self, key: str, value: Any, go_type: str) -> HTTPError:
        kind = _kind(value)
        if go_type not in INTEGER_RANGES or isinstance(value, bool | str | list | dict):
            kind = kind.split()[0]
        return bad_request(f"json: cannot unmarshal {kind} into Go struct field "
                           f"{self.struct}.{self.path}{key} of type {go_type}")

    def string(self, key: str) -> str:
        value = self.data.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._fail(key, value, "string")
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, value, "bool")
        return value

    def integer(self, key: str, go_type: str = "int64") -> int:
        value = self.data.get(key)
        return 0 if value is None else self._in_range(key, value, go_type)

    def integers(self, key: str, go_type: str) -> list[int]:
        return [self._in_range(key, item, go_type)
                for item in self._list(key, f"[]{go_type}")]

    def _in_range(self, key: str, value: Any, go_type: str) -> int:
        low, high = INTEGER_RANGES[go_type]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._fail(key, value, go_type)
        return value

    def _list(self, key: str, go_type: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(key, value, go_type)
        return value

    def strings(self, key: str) -> list[str]:
        """[]string (null items are empty strings, as in Go)."""
        values = self._list(key, "[]string")
        for item in values:
            if item is not None and not isinstance(item, str):
                raise self._fail(key, item, "string")
        return [item or "" for item in values]

    def string_lists(self, key: str) -> list[list[str]]:
        """[][]string (DeviceRequests' Capabilities)."""
        lists = self._list(key, "[][]string")
        for items in lists:
            if items is not None and not isinstance(items, list):
                raise self._fail(key, items, "[]string")
            for item in items or []:
                if item is not None and not isinstance(item, str):
                    raise self._fail(key, item, "string")
        return [[item or "" for item in items or []] for items in lists]

    def str_slice(self, key: str) -> list[str] | None:
        """Docker's StrSlice: null (None), one string, or a list of strings."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise self._fail(key, value, "strslice.StrSlice")
        return self.strings(key)

    def _mapping(self, key: str, go_type: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._fail(key, value, go_type)
        return value

    def string_map(self, key: str) -> dict[str, str]:
        """map[string]string."""
        values = self._mapping(key, "map[string]string")
        for item in values.values():
            if item is not None and not isinstance(item, str):
                raise self._fail(key, item, "string")
        return {name: item or "" for name, item in values.items()}

    def keys(self, key: str) -> list[str]:
        """The keys of a map[string]struct{} (ExposedPorts, Volumes)."""
        return list(self._mapping(key, "map[string]struct {}"))

    def _nested(self, key: str, value: dict[str, Any], go_type: str) -> Fields:
        return Fields(value, _short_name(go_type), f"{self.path}{key}.")

    def object(self, key: str, go_type: str) -> Fields:
        """A nested struct; null or absent is an empty one."""
        return self._nested(key, self._mapping(key, go_type), go_type)

    def objects(self, key: str, go_type: str) -> list[Fields]:
        """A []struct field."""
        items = self._list(key, f"[]{go_type}")
        for item in items:
            if item is not None and not isinstance(item, dict):
                raise self._fail(key, item, go_type)
        return [self._nested(key, item or {}, go_type) for item in items]

    def object_map(self, key: str, go_type: str) -> dict[str, Fields]:
        """A map[string]*struct field (EndpointsConfig)."""
        items = self._mapping(key, f"map[string]*{go_type}")
        for item in items.values():
            if item is not None and not isinstance(item, dict):
                raise self._fail(key, item, go_type)
        return {name: self._nested(key, item or {}, go_type) for name, item in items.items()}

    def object_lists(self, key: str, go_type: str) -> dict[str, list[Fields]]:
        """A map[string][]struct field (PortBindings)."""
        items = self._mapping(key, f"map[string][]{go_type}")
        holder = Fields(items, self.struct, f"{self.path}{key}.")
        return {name: holder.objects(name, go_type) for name in items}


def platform_param(text: str) -> str:
    """Docker's JSON platform parameter (httputils.DecodePlatform), as the
    `os/arch[/variant]` text the services take; empty when not given."""
    if not text:
        return ""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise HTTPError(400, f"failed to parse platform: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "failed to parse platform: not a JSON object")
    os_name, architecture = value.get("os") or "", value.get("architecture") or ""
    optional = value.get("variant") or value.get("os.version") or value.get("os.features")
    if not os_name and not architecture and optional:
        raise HTTPError(400, "optional platform fields provided, but OS and Architecture are "
                             "missing")
    if not os_name or not architecture:
        raise HTTPError(400, "both OS and Architecture must be provided")
    return "/".join(part for part in (os_name, architecture, value.get("variant") or "")
                    if part)
