"""gRPC methods for work inside a running container: exec, archive (cp),
top, stats, changes, export, commit, update. Mixed into ContainerServicer."""

from __future__ import annotations


class InsideServicerMixin:
    pass
