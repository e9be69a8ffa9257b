"""Boot of one berth service: gRPC server, health, reflection, info, metrics,
and a graceful SIGTERM (stop accepting, finish in-flight calls, exit 0)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from berth.types.v1 import types_pb2, types_pb2_grpc
from services.common.config import Config
from services.common.interceptors import ServerInterceptor
from services.common.metrics import serve_metrics
from services.common.version import VERSION

GRACE_SECONDS = 10.0
log = logging.getLogger("berth")


@dataclass
class ServiceContext:
    """What a service's setup gets: its config and hooks for shutdown."""

    name: str
    config: Config
    server: grpc.aio.Server
    counts: Callable[[], dict[str, int]] = field(default=lambda: {})
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


# A service's setup registers its servicers on the server and returns the
# full names of the gRPC services it added (for health and reflection).
Setup = Callable[[ServiceContext], Awaitable[list[str]]]


class InfoServicer(types_pb2_grpc.InfoServicer):
    def __init__(self, ctx: ServiceContext, address: str, metrics_url: str) -> None:
        self._ctx = ctx
        self._address = address
        self._metrics_url = metrics_url
        self._started = Timestamp()
        self._started.GetCurrentTime()

    async def GetServiceInfo(self, request, context):  # noqa: N802 (gRPC naming)
        return types_pb2.ServiceInfo(
            name=self._ctx.name, version=VERSION, started_at=self._started,
            address=self._address, metrics_url=self._metrics_url, pid=os.getpid(),
            object_counts=self._ctx.counts())


def server_credentials(config: Config) -> grpc.ServerCredentials:
    if config.tls is None:
        raise SystemExit("berth: a tcp:// listen address needs --tls-ca, --tls-cert, --tls-key")
    ca, cert, key = config.tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=True)


def bind(server: grpc.aio.Server, config: Config, address: str) -> None:
    if address.startswith("unix://"):
        path = Path(address.removeprefix("unix://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        server.add_insecure_port(address)
    elif address.startswith("tcp://"):
        server.add_secure_port(address.removeprefix("tcp://"), server_credentials(config))
    else:
        raise SystemExit(f"berth: listen address must be unix://PATH or tcp://HOST:PORT: {address}")


async def run(name: str, config: Config, setup: Setup) -> None:
    """Serve `name` until SIGTERM/SIGINT."""
    address = config.listen or config.address(name)
    server = grpc.aio.server(
        interceptors=[ServerInterceptor()],
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    ctx = ServiceContext(name=name, config=config, server=server)
    # Handlers first: a SIGTERM that arrives during setup then stops the
    # service right after it starts, running its shutdown hooks (a service
    # killed mid-setup would leave whatever setup created, e.g. bridges).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service_names = await setup(ctx)

    metrics_url = serve_metrics(config.metrics_addr)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    types_pb2_grpc.add_InfoServicer_to_server(InfoServicer(ctx, address, metrics_url), server)
    all_names = [*service_names, types_pb2.DESCRIPTOR.services_by_name["Info"].full_name,
                 health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(all_names, server)

    bind(server, config, address)
    await server.start()
    for service in ["", *service_names]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s service serving on %s, metrics at %s", name, address, metrics_url)
    await stop.wait()

    started = time.monotonic()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)
    for hook in ctx.on_shutdown:
        await hook()
    log.info("%s service stopped in %.2fs", name, time.monotonic() - started)
