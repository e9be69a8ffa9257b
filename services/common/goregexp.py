"""Docker's regular expressions (name and id filters, log options' regex):
Go's regexp, RE2 syntax, matched in time linear in the input. Python's re
backtracks, and a pattern such as (a+)+$ from a client kept a service busy
for minutes; RE2 has no such patterns."""

from __future__ import annotations

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False     # an invalid pattern is the caller's error to report


class GoRegexpError(ValueError):
    """A pattern RE2 cannot parse, with its message."""


def compile(pattern: str) -> re2._Regexp:  # noqa: A001 - re's name for it
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise GoRegexpError(text) from None
