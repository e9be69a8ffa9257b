"""Wiring of the gateway: the Docker API over HTTP on docker.sock (and TCP).

The gateway also serves gRPC health and info on gateway.sock, so `berth up`
and `berth status` watch it like any service.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from services.common.server import ServiceContext, claim_unix_socket, restrict_socket
from services.gateway.app import make_app
from services.gateway.backends import Backends
from services.gateway.tls import serve_tls


def tls_context(ctx: ServiceContext) -> ssl.SSLContext:
    tls = ctx.config.gateway_tls
    if tls is None:
        raise SystemExit("berth: --tcp needs --tlscacert, --tlscert and --tlskey")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
    context.load_cert_chain(tls.cert, tls.key)
    context.verify_mode = ssl.CERT_REQUIRED  # like dockerd --tlsverify
    return context


async def setup(ctx: ServiceContext) -> list[str]:
    sock = ctx.config.docker_socket
    claim_unix_socket(sock, ctx.name)
    backends = Backends(ctx.config)
    runner = web.AppRunner(make_app(backends), access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.UnixSite(runner, str(sock)).start()
    restrict_socket(sock)
    tcp_server = None
    if ctx.config.gateway_tcp:
        host, _, port = ctx.config.gateway_tcp.rpartition(":")
        tcp_server = await serve_tls(runner.server, host or "0.0.0.0", int(port),
                                     tls_context(ctx))

    async def shutdown() -> None:
        if tcp_server is not None:
            tcp_server.close()
        await runner.cleanup()
        await backends.close()
        sock.unlink(missing_ok=True)
    ctx.on_shutdown.append(shutdown)
    return []
