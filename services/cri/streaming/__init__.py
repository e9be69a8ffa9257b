"""The CRI streaming server (exec, attach, port-forward over SPDY and WebSocket)."""

from services.cri.streaming.server import StreamingServer

__all__ = ["StreamingServer"]
