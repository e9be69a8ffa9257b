"""Docker API routes for builds: route table plus handlers over gRPC."""

from __future__ import annotations

from services.gateway.backends import Backends
from services.gateway.routing import Route


def routes(backends: Backends) -> list[Route]:
    return []
