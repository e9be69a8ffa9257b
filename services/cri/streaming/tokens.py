"""One-time tokens of the streaming server: each names one prepared request."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

TOKEN_TTL = 60.0          # seconds; containerd's and the kubelet's value


@dataclass
class _Entry(Generic[T]):
    request: T
    expires: float


class TokenCache(Generic[T]):
    """Requests by token: consumed on first use, forgotten when they expire."""

    def __init__(self, ttl: float = TOKEN_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, _Entry[T]] = {}

    def insert(self, request: T) -> str:
        self._drop_expired()
        token = secrets.token_urlsafe(12)
        self._entries[token] = _Entry(request, self._clock() + self._ttl)
        return token

    def consume(self, token: str) -> T | None:
        """The request of `token`, once; None when unknown, used or expired."""
        entry = self._entries.pop(token, None)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry.request

    def _drop_expired(self) -> None:
        now = self._clock()
        for token in [t for t, e in self._entries.items() if e.expires <= now]:
            del self._entries[token]
