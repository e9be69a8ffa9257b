"""Prometheus metrics every process serves: gRPC server metrics named as
go-grpc-prometheus names them (counted by interceptors.py), process metrics,
and an HTTP endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

GRPC_STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"])
GRPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, regardless of success.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"])
GRPC_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Response latency of RPCs handled by the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
GRPC_MSG_RECEIVED = Counter(
    "grpc_server_msg_received_total", "Stream messages received by the server.",
    ["grpc_type", "grpc_service", "grpc_method"])
GRPC_MSG_SENT = Counter(
    "grpc_server_msg_sent_total", "Stream messages sent by the server.",
    ["grpc_type", "grpc_service", "grpc_method"])


def serve_metrics(addr: str) -> str:
    """Serve the default registry over HTTP on HOST:PORT; returns its URL."""
    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    bound_host, bound_port = server.server_address[:2]
    return f"http://{bound_host}:{bound_port}/metrics"
