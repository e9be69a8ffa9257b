"""Boot of one berth service: gRPC server, health, reflection, info, metrics,
the engine config reload (SIGHUP and the EngineConfig.Reload RPC),
and a graceful SIGTERM (stop accepting, finish in-flight calls, exit 0)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
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
from services.common.engine_config import read_engine_config, reloaded, setting
from services.common.errors import InvalidArgument
from services.common.interceptors import ServerInterceptor
from services.common.metrics import serve_metrics
from services.common.pidlock import PidLock
from services.common.tasks import keep_task
from services.common.version import VERSION

GRACE_SECONDS = 10.0
SOCKET_MODE = 0o660
EXEC_ROOT_MODE = 0o700
PROBE_TIMEOUT = 2.0
log = logging.getLogger("berth")


@dataclass
class ServiceContext:
    """What a service's setup gets: its config and hooks for shutdown."""

    name: str
    config: Config
    server: grpc.aio.Server
    counts: Callable[[], dict[str, int]] = field(default=lambda: {})
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called with the new engine settings after each reload of the config file.
    on_reload: list[Callable[[dict], Awaitable[None]]] = field(default_factory=list)


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


def apply_log_level(engine: dict) -> None:
    """dockerd's `debug` setting: the whole process logs at debug level."""
    logging.getLogger().setLevel(logging.DEBUG if setting(engine, "debug") else logging.INFO)


class ConfigReloader:
    """Reads the engine config file again and applies it, one reload at a
    time: on SIGHUP to this process, and on the EngineConfig.Reload RPC
    (how `berth up` reloads every service on SIGHUP). An invalid file
    changes nothing."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.lock = asyncio.Lock()
        self._signalled: set[asyncio.Task] = set()

    async def reload(self) -> None:
        config = self._ctx.config
        async with self.lock:
            document = await asyncio.to_thread(read_engine_config, config.engine_file)
            config.engine = reloaded(config.engine, document)
            apply_log_level(config.engine)
            for hook in self._ctx.on_reload:
                await hook(config.engine)
        log.info("%s service reloaded its configuration from %s", self._ctx.name,
                 config.engine_file or "no file")

    def on_signal(self) -> None:
        keep_task(self._signalled, asyncio.create_task(self._reload_logged()))

    async def _reload_logged(self) -> None:
        log.info("got signal to reload configuration, reloading from: %s",
                 self._ctx.config.engine_file or "no file")
        try:
            await self.reload()
        except InvalidArgument as exc:
            log.error("%s; keeping the previous configuration", exc.message)


class EngineConfigServicer(types_pb2_grpc.EngineConfigServicer):
    def __init__(self, reloader: ConfigReloader) -> None:
        self._reloader = reloader

    async def Reload(self, request, context):  # noqa: N802 (gRPC naming)
        await self._reloader.reload()
        return types_pb2.ReloadEngineConfigReply()


def server_credentials(config: Config) -> grpc.ServerCredentials:
    if config.tls is None:
        raise SystemExit("berth: a tcp:// listen address needs --tls-ca, --tls-cert, --tls-key")
    ca, cert, key = config.tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=True)


def prepare_exec_root(exec_root: Path) -> None:
    """The exec root holds every socket: ours alone (0700), whatever the umask."""
    exec_root.mkdir(parents=True, exist_ok=True)
    os.chown(exec_root, os.geteuid(), os.getegid())
    os.chmod(exec_root, EXEC_ROOT_MODE)


def service_lock(exec_root: Path, name: str) -> PidLock:
    """E/<service>.lock: held by the one process serving `name` on this exec root."""
    return PidLock(exec_root / f"{name}.lock")


def hold_service_lock(name: str, config: Config, address: str) -> None:
    """Refuse to be a second `name` service on this exec root. The lock stays
    held until this process exits: the kernel then drops it."""
    lock = service_lock(config.exec_root, name)
    if not lock.acquire(address):
        pid, where = lock.holder()
        raise SystemExit(f"berth serve: {name} service already serving on "
                         f"{where or config.address(name)} (pid {pid})")


def claim_unix_socket(path: Path, name: str) -> None:
    """Make way for binding `path`: remove a stale socket left by a dead
    server, but refuse while a live one answers there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(str(path))
        except FileNotFoundError:
            return
        except ConnectionRefusedError:
            path.unlink(missing_ok=True)
            return
        except TimeoutError:
            pass  # a server too busy to accept is still a server
    raise SystemExit(f"berth serve: {name} service already serving on {path}")


def restrict_socket(path: Path) -> None:
    """Owner and group only, whatever the umask was at bind time."""
    os.chmod(path, SOCKET_MODE)


def unix_path(address: str) -> Path | None:
    """The socket path of a unix:// address; None for tcp://."""
    if address.startswith("unix://"):
        return Path(address.removeprefix("unix://"))
    if address.startswith("tcp://"):
        return None
    raise SystemExit(f"berth: listen address must be unix://PATH or tcp://HOST:PORT: {address}")


def claim(name: str, config: Config, address: str) -> None:
    """Before setup creates anything: be the only `name` service on this
    exec root, and make way for its socket."""
    prepare_exec_root(config.exec_root)
    hold_service_lock(name, config, address)
    if path := unix_path(address):
        path.parent.mkdir(parents=True, exist_ok=True)
        claim_unix_socket(path, name)


def bind(server: grpc.aio.Server, config: Config, address: str) -> None:
    if path := unix_path(address):
        server.add_insecure_port(address)
        restrict_socket(path)
    else:
        server.add_secure_port(address.removeprefix("tcp://"), server_credentials(config))


async def run(name: str, config: Config, setup: Setup) -> None:
    """Serve `name` until SIGTERM/SIGINT."""
    address = config.listen or config.address(name)
    claim(name, config, address)
    server = grpc.aio.server(
        interceptors=[ServerInterceptor()],
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    ctx = ServiceContext(name=name, config=config, server=server)
    apply_log_level(config.engine)
    reloader = ConfigReloader(ctx)
    # Handlers first: a SIGTERM that arrives during setup then stops the
    # service right after it starts, running its shutdown hooks (a service
    # killed mid-setup would leave whatever setup created, e.g. bridges).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.on_signal)
    async with reloader.lock:  # a SIGHUP during setup reloads once setup is done
        service_names = await setup(ctx)

    metrics_url = serve_metrics(config.metrics_addr)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    types_pb2_grpc.add_InfoServicer_to_server(InfoServicer(ctx, address, metrics_url), server)
    types_pb2_grpc.add_EngineConfigServicer_to_server(EngineConfigServicer(reloader), server)
    all_names = [*service_names,
                 *(types_pb2.DESCRIPTOR.services_by_name[s].full_name
                   for s in ("Info", "EngineConfig")),
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
