"""Go durations ("1m30s", "500ms", "1.5h"), as Docker's flags and filters
take them (time.ParseDuration without signs)."""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")
_UNIT_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
               "m": 60_000_000_000, "h": 3_600_000_000_000}


def is_duration(text: str) -> bool:
    """Whether `text` is a duration with units (a bare "0" is not)."""
    return _WHOLE.fullmatch(text) is not None


def parse_ns(text: str) -> int:
    """The duration in nanoseconds; "0" is zero. Anything else raises Go's
    `time: invalid duration "..."`."""
    if text == "0":
        return 0
    if not is_duration(text):
        raise InvalidArgument(f'time: invalid duration "{text}"')
    return int(sum(float(number) * _UNIT_NANOS[unit] for number, unit in _PART.findall(text)))
