"""The CRI streaming server: one-time URLs for exec, attach and port-forward.

The cri service's Exec, Attach and PortForward RPCs store the request under
a one-time token and answer its URL (`/exec/<token>`, `/attach/<token>`,
`/portforward/<token>`). The client (kubelet, crictl) then upgrades a
connection to that URL, to SPDY/3.1 or to WebSocket. A token works once,
for one minute; an unknown, used or expired one is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from services.cri.streaming import portforward, remotecommand, spdy_http, websocket
from services.cri.streaming.portforward import PortForwardRequest
from services.cri.streaming.remotecommand import AttachRequest, ContainerService, ExecRequest
from services.cri.streaming.tokens import TokenCache

log = logging.getLogger(__name__)

SPDY_REMOTECOMMAND_PROTOCOLS = [remotecommand.V4, remotecommand.V3, remotecommand.V2]
WEBSOCKET_PORTFORWARD_PROTOCOLS = [websocket.SPDY_TUNNEL_PREFIX + portforward.PROTOCOL,
                                   remotecommand.V4, "v4.base64.channel.k8s.io"]

R = TypeVar("R")
Flags = tuple[bool, bool, bool, bool]        # stdin, stdout, stderr, tty


def split_address(address: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"streaming address must be HOST:PORT, not {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class StreamingServer:
    """HTTP(S) on `address`; exec and attach through the container service."""

    def __init__(self, container: ContainerService, address: str = "127.0.0.1:0",
                 tls_cert: str | None = None, tls_key: str | None = None) -> None:
        self._container = container
        self._host, self._port = split_address(address)
        self._ssl = self._ssl_context(tls_cert, tls_key)
        self._tokens: TokenCache[ExecRequest | AttachRequest | PortForwardRequest] = TokenCache()
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task] = set()
        self.base_url = ""

    @staticmethod
    def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
        if not cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key or None)
        return context

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/exec/{token}", self._exec)
        app.router.add_route("*", "/attach/{token}", self._attach)
        app.router.add_route("*", "/portforward/{token}", self._portforward)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, self._port), family=family)
        await web.SockSite(self._runner, listener, ssl_context=self._ssl).start()
        port = listener.getsockname()[1]
        host = self._host if self._host not in ("0.0.0.0", "::") else socket.gethostname()
        scheme = "https" if self._ssl else "http"
        self.base_url = f"{scheme}://[{host}]:{port}" if ":" in host else \
            f"{scheme}://{host}:{port}"

    async def stop(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the interface of the cri service -----------------------------------

    def exec_url(self, container_id: str, cmd: list[str], tty: bool, stdin: bool,
                 stdout: bool, stderr: bool) -> str:
        return self._url("exec", ExecRequest(container_id, list(cmd), tty, stdin, stdout,
                                             stderr))

    def attach_url(self, container_id: str, tty: bool, stdin: bool, stdout: bool,
                   stderr: bool) -> str:
        return self._url("attach", AttachRequest(container_id, tty, stdin, stdout, stderr))

    def portforward_url(self, sandbox_id: str, netns_path: str, ports: list[int]) -> str:
        return self._url("portforward", PortForwardRequest(sandbox_id, netns_path, list(ports)))

    def _url(self, kind: str, request: ExecRequest | AttachRequest | PortForwardRequest) -> str:
        if not self.base_url:
            raise RuntimeError("the streaming server is not started")
        return f"{self.base_url}/{kind}/{self._tokens.insert(request)}"

    # -- handlers -----------------------------------------------------------

    def _consume(self, request: web.Request, kind: type[R]) -> R:
        found = self._tokens.consume(request.match_info["token"])
        if not isinstance(found, kind):
            raise web.HTTPNotFound(text="unknown or expired streaming token")
        return found

    async def _tracked(self, work: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        """Run a session so that stop() can end it."""
        task = asyncio.ensure_future(work)
        self._handlers.add(task)
        try:
            return await task
        finally:
            self._handlers.discard(task)

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        exec_request = self._consume(request, ExecRequest)
        flags = (exec_request.stdin, exec_request.stdout, exec_request.stderr, exec_request.tty)
        return await self._tracked(self._remotecommand(
            request, flags, lambda io: remotecommand.run_exec(self._container, exec_request, io)))

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        attach = self._consume(request, AttachRequest)
        flags = (attach.stdin, attach.stdout, attach.stderr, attach.tty)
        return await self._tracked(self._remotecommand(
            request, flags, lambda io: remotecommand.run_attach(self._container, attach, io)))

    async def _remotecommand(self, request: web.Request, flags: Flags,
                             run: Callable[[remotecommand.IO], Awaitable[None]]
                             ) -> web.StreamResponse:
        stdin, stdout, stderr, tty = flags
        if websocket.wants_websocket(request):
            socket_ = await websocket.accept(request, websocket.REMOTECOMMAND_PROTOCOLS)
            io = websocket.WebSocketIO(websocket.ChannelSocket(socket_), stdout, stderr)
            with contextlib.suppress(ConnectionError):
                await io.open()
                await run(io)
            await socket_.close()
            return socket_
        connection = await spdy_http.upgrade(request, SPDY_REMOTECOMMAND_PROTOCOLS)
        try:
            streams = await spdy_http.accept_streams(connection.session,
                                                     spdy_http.expected_streams(
                                                         connection.protocol, stdin, stdout,
                                                         stderr, tty))
            await run(spdy_http.SpdyIO(connection.protocol, streams))
        except (TimeoutError, ConnectionError) as exc:
            log.info("streaming session from %s ended: %r", request.remote, exc)
        finally:
            await connection.close()
        return connection.response

    async def _portforward(self, request: web.Request) -> web.StreamResponse:
        forward = self._consume(request, PortForwardRequest)
        if websocket.wants_websocket(request):
            return await self._tracked(self._portforward_websocket(request, forward))
        return await self._tracked(self._portforward_spdy(request, forward))

    async def _portforward_spdy(self, request: web.Request,
                                forward: PortForwardRequest) -> web.StreamResponse:
        connection = await spdy_http.upgrade(request, [portforward.PROTOCOL])
        try:
            await portforward.serve_spdy(connection.session, forward)
        finally:
            await connection.close()
        return connection.response

    async def _portforward_websocket(self, request: web.Request,
                                     forward: PortForwardRequest) -> web.StreamResponse:
        if not forward.ports:
            try:
                ports = [portforward.parse_port(p) for p in request.query.getall("port", [])]
            except portforward.DialError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
            forward = PortForwardRequest(forward.sandbox_id, forward.netns_path, ports)
        socket_ = await websocket.accept(request, WEBSOCKET_PORTFORWARD_PROTOCOLS)
        if (socket_.ws_protocol or "").startswith(websocket.SPDY_TUNNEL_PREFIX):
            tunnel = websocket.TunnelledSession(socket_)
            pump = asyncio.create_task(tunnel.pump())
            try:
                await tunnel.session.start()
                await portforward.serve_spdy(tunnel.session, forward)
            finally:
                await tunnel.session.close()
                await socket_.close()
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        else:
            await portforward.serve_websocket(websocket.ChannelSocket(socket_), forward)
        return socket_
