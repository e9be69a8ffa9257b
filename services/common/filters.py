"""Docker's filter arguments (`?filters=`), read the same way by every service.

A filter is a key with a list of accepted values: OR within a key, AND across
keys, except `label` (every expression must hold) and `label!` (an object is
left out only when every expression holds), as moby's `filters.Args` does.
Times (`until`, `since`, `--since`/`--until` of events and logs) are read as
moby's `GetTimestamp` reads them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from berth.types.v1 import types_pb2
from services.common import godur, goregexp
from services.common.errors import InvalidArgument

_NANOS = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The pieces of Go's reference time the accepted layouts are made of.
_LAYOUT_PIECES = {
    "2006": r"(?P<year>\d{4})", "-01": r"-(?P<month>\d{2})", "-02": r"-(?P<day>\d{2})",
    "T15": r"T(?P<hour>\d{1,2})", ":04": r":(?P<minute>\d{2})", ":05": r":(?P<second>\d{2})",
    ".999999999": r"(?:[.,](?P<fraction>\d+))?", "Z07:00": r"(?P<zone>Z|[+-]\d{2}:\d{2})",
}
_LAYOUT_TOKEN = re.compile("|".join(re.escape(piece) for piece in _LAYOUT_PIECES))
_UNIX = re.compile(r"\+?(?P<seconds>\d+)(?:\.(?P<fraction>\d+))?")


def timestamp_ns(value: str, now_ns: int | None = None) -> int:
    """A time as nanoseconds since the epoch, read as moby's GetTimestamp:
    a Go duration back from now (`10m`, `1h30m`; whole seconds), an RFC 3339
    time with or without fraction and zone, a date (`2024-05-01`, optionally
    with a zone), or Unix seconds with an optional fraction. Times without a
    zone are in the engine's local zone."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    if value != "0" and godur.is_duration(value):
        return (now_ns - godur.parse_ns(value)) // _NANOS * _NANOS
    layout, local = _layout_of(value)
    parsed = _parse_layout(value, layout, local)
    if parsed is not None:
        return parsed
    if "-" in value:
        raise InvalidArgument(f'parsing time "{value}" as "{layout}": not a valid time')
    unix = _UNIX.fullmatch(value)
    if unix is None:
        raise InvalidArgument(f'failed to parse value as time or duration: "{value}"')
    return int(unix["seconds"]) * _NANOS + _fraction_ns(unix["fraction"])


def _layout_of(value: str) -> tuple[str, bool]:
    """The Go layout GetTimestamp picks for `value`, and whether it has no zone."""
    local = not any(c in value for c in "zZ+") and value.count("-") != 3
    if "." in value:
        layout = "2006-01-02T15:04:05.999999999"
    elif "T" in value:
        colons = value.count(":")
        if not local and not any(c in value for c in "zZ") and colons > 0:
            colons -= 1  # the zone offset's colon
        layout = ("2006-01-02T15", "2006-01-02T15:04", "2006-01-02T15:04:05")[min(colons, 2)]
    else:
        layout = "2006-01-02"
    return (layout, True) if local else (layout + "Z07:00", False)


def _parse_layout(value: str, layout: str, local: bool) -> int | None:
    pattern = _LAYOUT_TOKEN.sub(lambda token: _LAYOUT_PIECES[token[0]], layout)
    match = re.fullmatch(pattern, value)
    if match is None:
        return None
    fields = match.groupdict()
    try:
        zone = _local_zone() if local else _zone(fields["zone"])
        moment = datetime(int(fields["year"]), int(fields["month"]), int(fields["day"]),
                          int(fields.get("hour") or 0), int(fields.get("minute") or 0),
                          int(fields.get("second") or 0), tzinfo=zone)
    except ValueError:
        return None
    return (moment - _EPOCH) // timedelta(seconds=1) * _NANOS + _fraction_ns(fields.get("fraction"))


def _local_zone() -> tzinfo:
    """The engine's current UTC offset, as Go's FixedZone(now.Zone())."""
    return datetime.now().astimezone().tzinfo or UTC


def _zone(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if minutes >= 60:
        raise ValueError(text)
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _fraction_ns(digits: str | None) -> int:
    """Fractional seconds as nanoseconds; digits past the ninth are dropped."""
    return int(digits[:9].ljust(9, "0")) if digits else 0


def label_matches(labels: Mapping[str, str], expression: str) -> bool:
    """`key` (present) or `key=value` (present with that value)."""
    key, has_value, value = expression.partition("=")
    return key in labels and (not has_value or labels[key] == value)


def name_matches(pattern: str, name: str) -> bool:
    """Docker's name filter: the same name, or a regular expression found in
    it; a pattern that is no valid expression matches only itself."""
    if pattern == name:
        return True
    try:
        return goregexp.compile(pattern).search(name) is not None
    except goregexp.GoRegexpError:
        return False


class Filters:
    """The filters of one request: key -> accepted values."""

    def __init__(self, values: Mapping[str, Iterable[str]] | None = None) -> None:
        self._values = {key: list(accepted) for key, accepted in (values or {}).items()}

    @classmethod
    def from_message(cls, message: types_pb2.Filters) -> Filters:
        return cls({key: accepted.values for key, accepted in message.filters.items()})

    def checked(self, accepted: Collection[str]) -> Filters:
        """These filters, when every key is one of `accepted`."""
        for key in self._values:
            if key not in accepted:
                raise InvalidArgument(f"invalid filter '{key}'")
        return self

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str) -> list[str]:
        return self._values.get(key, [])

    def items(self) -> Iterable[tuple[str, list[str]]]:
        return self._values.items()

    def one(self, key: str) -> str | None:
        """The single value of `key` (None when absent)."""
        values = self.get(key)
        if len(values) > 1:
            raise InvalidArgument(f"filters expect only one value: '{key}'")
        return values[0] if values else None

    def boolean(self, key: str, default: bool) -> bool:
        """`true`/`1` or `false`/`0`; anything else, or both, is refused."""
        if key not in self._values:
            return default
        values = set(self._values[key])
        says_true, says_false = bool(values & {"true", "1"}), bool(values & {"false", "0"})
        if says_true == says_false:
            raise InvalidArgument(f"invalid filter '{key}=[{' '.join(self._values[key])}]'")
        return says_true

    def flag(self, key: str) -> bool | None:
        """A boolean filter that is either given (true or false) or absent (None)."""
        return self.boolean(key, False) if key in self._values else None

    def match_any(self, key: str, test: Callable[[str], bool]) -> bool:
        """Whether some value of `key` passes `test` (true when `key` is absent)."""
        values = self.get(key)
        return not values or any(test(value) for value in values)

    def match_name(self, key: str, *names: str) -> bool:
        """Some value of `key` matches one of `names` as Docker's name filter."""
        return self.match_any(key, lambda p: any(name_matches(p, name) for name in names))

    def match_labels(self, labels: Mapping[str, str]) -> bool:
        """`label`: every expression holds; `label!`: not all of them hold."""
        if not all(label_matches(labels, e) for e in self.get("label")):
            return False
        excluding = self.get("label!")
        return not (excluding and all(label_matches(labels, e) for e in excluding))

    def until_ns(self, now_ns: int | None = None) -> int | None:
        """The `until` time of a prune (at most one), or None."""
        values = self.get("until")
        if len(values) > 1:
            raise InvalidArgument("more than one until filter specified")
        return self.time_ns("until", values[0], now_ns) if values else None

    @staticmethod
    def time_ns(key: str, value: str, now_ns: int | None = None) -> int:
        """A filter's time value; a bad one names the filter."""
        try:
            return timestamp_ns(value, now_ns)
        except InvalidArgument as exc:
            raise InvalidArgument(f"\"{key}\" filter expects a duration (e.g., '24h') or a "
                                  f"timestamp: {exc.message}") from exc
