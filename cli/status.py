"""`berth status`: each service's address, health, version, uptime, metrics."""

from __future__ import annotations

import json
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.types.v1 import types_pb2, types_pb2_grpc
from cli.ctl.output import print_table
from services.common.config import SERVICES, Config
from services.common.peers import sync_channel


def service_status(config: Config, name: str) -> dict:
    row = {"service": name, "address": config.address(name), "health": "UNREACHABLE",
           "version": "", "uptime_seconds": None, "metrics_url": "", "pid": None}
    with sync_channel(config, name) as ch:
        try:
            health = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2)
            row["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
            info = types_pb2_grpc.InfoStub(ch).GetServiceInfo(
                types_pb2.GetServiceInfoRequest(), timeout=2)
        except grpc.RpcError:
            return row
    row.update(version=info.version, metrics_url=info.metrics_url, pid=info.pid,
               uptime_seconds=round(time.time() - info.started_at.ToSeconds(), 1))
    return row


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def status(config: Config, as_json: bool) -> int:
    rows = [service_status(config, name) for name in SERVICES]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(["SERVICE", "ADDRESS", "HEALTH", "VERSION", "UPTIME", "METRICS"],
                    [[r["service"], r["address"], r["health"], r["version"] or "-",
                      _uptime(r["uptime_seconds"]), r["metrics_url"] or "-"] for r in rows])
    return 0 if all(r["health"] == "SERVING" for r in rows) else 1
