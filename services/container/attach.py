"""Attach sessions: a client's stdin and output joined to conmon's attach socket.

The socket carries packets whose first byte names the stream (2 stdout,
3 stderr); what the client writes goes to the container's stdin as is.
Typing the detach keys ends the session without touching the container.
PendingAttaches orders attaches before the start they wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

from berth.container.v1 import container_pb2
from services.common.errors import InvalidArgument
from services.container.runtime import STDERR, STDOUT

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_PACKET = 65536
_STDIN_PACKET = 32768
Frame = container_pb2.IOFrame


def detach_keys(spec: str, none: bool) -> bytes:
    """The detach sequence of a session; b"" when it has none (`none`)."""
    if none and spec:
        raise InvalidArgument("detach keys cannot be given with no detach keys")
    return b"" if none else parse_detach_keys(spec)


def parse_detach_keys(spec: str) -> bytes:
    """Docker's detach key syntax: comma separated `ctrl-<key>` or single chars."""
    keys = bytearray()
    for part in (spec or DEFAULT_DETACH_KEYS).split(","):
        part = part.strip()
        if len(part) == 1:
            keys.append(ord(part))
            continue
        key = part.removeprefix("ctrl-")
        if part == key or len(key) != 1 or not ("a" <= key <= "z" or key in "@[\\]^_"):
            raise InvalidArgument(f"Invalid detach keys ({spec}) provided")
        keys.append(ord(key.upper()) - 64 if key.isalpha() else ord(key) - 64)
    return bytes(keys)


class _DetachScanner:
    """Holds back bytes that may start the detach sequence."""

    def __init__(self, keys: bytes) -> None:
        self._keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to forward, whether the keys were typed)."""
        out = bytearray()
        for byte in data:
            candidate = self._held + bytes([byte])
            if self._keys.startswith(candidate):
                if candidate == self._keys:
                    return bytes(out), True
                self._held = candidate
            else:
                out += candidate
                self._held = b""
        return bytes(out), False


async def pump(sock: socket.socket, options: container_pb2.AttachOptions, tty: bool,
               requests: AsyncIterator[container_pb2.AttachRequest] | None
               ) -> AsyncIterator[Frame]:
    """Output frames of the session until the container's output ends or the
    client detaches; stdin flows from `requests` meanwhile."""
    queue: asyncio.Queue[Frame | None] = asyncio.Queue()
    wanted = {STDOUT: options.stdout, STDERR: options.stderr}
    tasks = [asyncio.create_task(_read_output(sock, wanted, queue))]
    if options.stdin and requests is not None:
        keys = detach_keys(options.detach_keys, options.no_detach_keys)
        tasks.append(asyncio.create_task(_forward_stdin(sock, requests, keys, tty, queue)))
    try:
        while (frame := await queue.get()) is not None:
            yield frame
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sock.close()


async def _read_output(sock: socket.socket, wanted: dict[int, bool],
                       queue: asyncio.Queue[Frame | None]) -> None:
    loop = asyncio.get_running_loop()
    try:
        while packet := await loop.sock_recv(sock, _PACKET + 1):
            if wanted.get(packet[0]) and len(packet) > 1:
                stream = Frame.STDERR if packet[0] == STDERR else Frame.STDOUT
                queue.put_nowait(Frame(stream=stream, data=packet[1:]))
    except OSError:
        pass
    queue.put_nowait(None)


async def _forward_stdin(sock: socket.socket,
                         requests: AsyncIterator[container_pb2.AttachRequest],
                         keys: bytes, tty: bool, queue: asyncio.Queue[Frame | None]) -> None:
    loop = asyncio.get_running_loop()
    scanner = _DetachScanner(keys)
    try:
        async for request in requests:
            if request.WhichOneof("part") == "close_stdin":
                break
            # Docker looks for the detach keys only with a TTY: piped stdin is data.
            data, detached = (scanner.feed(request.stdin) if tty and keys
                              else (request.stdin, False))
            if data:
                # conmon reads each packet into a 32 KiB buffer and drops the rest.
                for start in range(0, len(data), _STDIN_PACKET):
                    await loop.sock_sendall(sock, data[start:start + _STDIN_PACKET])
            if detached:
                queue.put_nowait(Frame(detached=True))
                queue.put_nowait(None)
                return
    except OSError:
        return
    if not tty:
        # conmon closes the container's stdin on this unless it was told to
        # leave it open (StdinOnce false).
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


class PendingAttaches:
    """Where attach sessions and starts meet, so no output is lost.

    `docker run` attaches, then starts once the attach is answered: a start
    that comes while an attach is still reading its options waits for it
    (up to a bound). An attach to a container that is not running waits for
    its next start (`docker start -a` attaches first), which hands it a
    connection to conmon's attach socket before the process runs.
    """

    def __init__(self) -> None:
        self._opening = 0
        self._changed = asyncio.Condition()
        self._waiters: dict[str, list[asyncio.Future[socket.socket | None]]] = {}

    @contextlib.asynccontextmanager
    async def opening(self) -> AsyncIterator[None]:
        """Held while an attach reads its options."""
        self._opening += 1
        try:
            yield
        finally:
            self._opening -= 1
            async with self._changed:
                self._changed.notify_all()

    async def settled(self, timeout: float) -> None:
        """Return once no attach is reading its options, or after `timeout`."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self._opening == 0),
                                       timeout)

    def wait_for_start(self, container_id: str) -> asyncio.Future[socket.socket | None]:
        """A future of the attach socket at the container's next start (None: no start)."""
        waiter: asyncio.Future[socket.socket | None] = \
            asyncio.get_running_loop().create_future()
        self._waiters.setdefault(container_id, []).append(waiter)
        return waiter

    def started(self, container_id: str, connect: Callable[[], socket.socket]) -> None:
        """The container is created and not yet started: connect every waiter."""
        for waiter in self._waiters.pop(container_id, []):
            if not waiter.done():
                waiter.set_result(connect())

    def ended(self, container_id: str) -> None:
        """The start failed or the container is gone: the waiters get nothing."""
        for waiter in self._waiters.pop(container_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def drop(self, container_id: str, waiter: asyncio.Future[socket.socket | None]) -> None:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.get(container_id, []).remove(waiter)
