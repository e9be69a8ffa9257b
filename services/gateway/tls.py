"""The gateway's TCP listener with TLS that supports half-close.

asyncio's TLS transport (Python 3.11 sslproto) closes the whole connection
when the client half-closes: on a TCP FIN or a close_notify it shuts TLS
down, and returning True from `eof_received()` has no effect. The Docker
CLI half-closes a hijacked attach/exec connection as soon as it has no more
stdin (moby's client calls CloseWrite on the raw TCP connection under its
tls.Conn), so output sent after that was lost.

Here each TLS connection is terminated with the ssl module's MemoryBIO and
its plaintext handed to aiohttp over a socket pair, a plain transport that
does support half-close: the client's EOF (FIN or close_notify) becomes a
half-close of the pair, and our output keeps flowing until aiohttp closes
its end, which sends our close_notify and closes the TCP connection.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

_READ_SIZE = 256 * 1024
_HANDSHAKE_TIMEOUT = 60.0  # seconds, as asyncio's own TLS transport


class _Plaintext(asyncio.Protocol):
    """Our end of the socket pair: aiohttp's output, to be encrypted."""

    def __init__(self, tls: _TLSConnection) -> None:
        self._tls = tls

    def data_received(self, data: bytes) -> None:
        self._tls.send(data)

    def eof_received(self) -> bool:
        self._tls.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._tls.finish()

    def pause_writing(self) -> None:
        self._tls.pause_reading()

    def resume_writing(self) -> None:
        self._tls.resume_reading()


class _TLSConnection(asyncio.Protocol):
    """One client's TCP connection: TLS handshake, then decrypted bytes to
    aiohttp through a socket pair and aiohttp's bytes back, encrypted."""

    def __init__(self, context: ssl.SSLContext,
                 protocol_factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._protocol_factory = protocol_factory
        self._tcp: asyncio.Transport | None = None
        self._plaintext: asyncio.Transport | None = None
        self._pending: list[bytes] = []     # decrypted before the pair is connected
        self._client_done = False           # the client sent EOF or close_notify
        self._handshaken = False
        self._connecting: asyncio.Task[None] | None = None
        self._lost = False
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        self._handshake_timer = asyncio.get_running_loop().call_later(
            _HANDSHAKE_TIMEOUT, self._abort)

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
                self._stop_handshake_timer()
                self._connecting = asyncio.get_running_loop().create_task(
                    self._connect_plaintext())
            self._decrypt()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            self._flush()
            self._abort()
            return
        self._flush()

    def _decrypt(self) -> None:
        while not self._client_done:
            try:
                chunk = self._tls.read(_READ_SIZE)
            except ssl.SSLZeroReturnError:  # close_notify: the client stopped sending
                chunk = b""
            if not chunk:
                self._client_done = True
                self._forward_eof()
                return
            self._forward(chunk)

    def eof_received(self) -> bool:
        """TCP FIN: a half-close when the handshake is done; keep writing."""
        if not self._handshaken:
            return False
        self._client_done = True
        self._forward_eof()
        return True

    def _stop_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._stop_handshake_timer()
        if self._plaintext is not None:
            self._plaintext.abort()

    def pause_writing(self) -> None:
        if self._plaintext is not None:
            self._plaintext.pause_reading()

    def resume_writing(self) -> None:
        if self._plaintext is not None:
            self._plaintext.resume_reading()

    async def _connect_plaintext(self) -> None:
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self._protocol_factory, theirs)
            self._plaintext, _ = await loop.connect_accepted_socket(
                lambda: _Plaintext(self), ours)
        except OSError:
            ours.close()
            theirs.close()
            self._abort()
            return
        if self._lost:
            self._plaintext.abort()
            return
        for chunk in self._pending:
            self._plaintext.write(chunk)
        self._pending.clear()
        if self._client_done:
            self._plaintext.write_eof()

    def _forward(self, chunk: bytes) -> None:
        if self._plaintext is None:
            self._pending.append(chunk)
        else:
            self._plaintext.write(chunk)

    def _forward_eof(self) -> None:
        if self._plaintext is not None and not self._plaintext.is_closing():
            self._plaintext.write_eof()

    def send(self, data: bytes) -> None:
        """Encrypt aiohttp's bytes to the client."""
        if self._tcp is None or self._tcp.is_closing():
            return
        try:
            self._tls.write(data)
        except ssl.SSLError:
            self._abort()
            return
        self._flush()

    def finish(self) -> None:
        """aiohttp closed the connection: send close_notify, close TCP."""
        if self._tcp is None or self._tcp.is_closing():
            return
        try:
            self._tls.unwrap()
        except ssl.SSLError:
            pass  # the client's close_notify is not awaited
        self._flush()
        self._tcp.close()

    def pause_reading(self) -> None:
        if self._tcp is not None and not self._tcp.is_closing():
            self._tcp.pause_reading()

    def resume_reading(self) -> None:
        if self._tcp is not None and not self._tcp.is_closing():
            self._tcp.resume_reading()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._tcp is not None and not self._tcp.is_closing():
            self._tcp.write(data)

    def _abort(self) -> None:
        if self._tcp is not None:
            self._tcp.abort()
        if self._plaintext is not None:
            self._plaintext.abort()


async def serve_tls(protocol_factory: Callable[[], asyncio.BaseProtocol], host: str,
                    port: int, context: ssl.SSLContext) -> asyncio.Server:
    """Listen on host:port with TLS; each connection's plaintext goes to a
    protocol from `protocol_factory` (aiohttp's `runner.server`)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _TLSConnection(context, protocol_factory),
                                    host, port, reuse_address=True)
