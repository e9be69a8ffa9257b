"""The syslog log driver: the lines conmon writes to the container's log,
followed from where the start found the file and sent to the syslog-address
in Docker's formats (srslog's: the local Unix format by default, rfc3164,
rfc5424, rfc5424micro; one message per line, newline-terminated, stdout at
severity info and stderr at err)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from services.common.errors import Internal
from services.container import logdrivers, logs

_LOCAL_SYSLOG_PATHS = ("/dev/log", "/var/run/syslog", "/var/run/log")
_SEVERITY = {"stdout": 6, "stderr": 3}
_CONNECT_SECONDS = 10


class SyslogSink:
    """One connection to a syslog receiver and the format of its messages."""

    def __init__(self, sock: socket.socket, hostname: str, facility: int, fmt: str,
                 tag: str) -> None:
        self._sock = sock
        self._hostname = hostname
        self._facility = facility
        self._format = fmt
        self._tag = tag

    @classmethod
    async def connect(cls, options: dict[str, str], tag: str) -> SyslogSink:
        scheme, target = logdrivers.syslog_address(options.get("syslog-address", ""))
        try:
            async with asyncio.timeout(_CONNECT_SECONDS):
                sock, hostname = await _connect(scheme, target)
        except OSError as exc:   # TimeoutError included
            reason = _dial_error(scheme, target, exc)
            raise Internal(f"failed to initialize logging driver: {reason}") from exc
        return cls(sock, hostname, logdrivers.syslog_facility(options.get("syslog-facility", "")),
                   options.get("syslog-format", ""), tag)

    def message(self, line: logs.LogLine) -> bytes:
        priority = self._facility | _SEVERITY[line.stream]
        content = line.data.decode(errors="replace").rstrip("\n")
        now, pid = datetime.now().astimezone(), os.getpid()
        if self._format in ("rfc5424", "rfc5424micro"):
            stamp = now.isoformat(timespec="seconds" if self._format == "rfc5424"
                                  else "microseconds")
            text = (f"<{priority}>1 {stamp} {self._hostname} {self._tag} {pid} {self._tag} - "
                    f"{content}")
        elif self._format == "rfc3164":
            text = f"<{priority}>{_stamp(now)} {self._hostname} {self._tag}[{pid}]: {content}"
        else:
            text = f"<{priority}>{_stamp(now)} {self._tag}[{pid}]: {content}"
        return text.encode() + b"\n"

    async def close(self) -> None:
        self._sock.close()

    async def ship(self, path: Path, offset: int, still_running: Callable[[], bool]) -> None:
        """Send the lines appended after `offset` until the container stops
        (empty lines are not sent, as Docker's syslog driver)."""
        await logs.ship(self._sock, path, offset, still_running,
                        lambda line: [self.message(line)] if line.data.strip(b"\n") else [])


def _stamp(now: datetime) -> str:
    """Go's time.Stamp: `Jan _2 15:04:05`."""
    return f"{now:%b} {now.day:2d} {now:%H:%M:%S}"


async def _connect(scheme: str, target: str | tuple[str, int]) -> tuple[socket.socket, str]:
    loop = asyncio.get_running_loop()
    if not scheme:
        return _connect_local(), "localhost"
    if scheme in ("unix", "unixgram"):
        kind = socket.SOCK_STREAM if scheme == "unix" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_UNIX, kind)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, target)
        except OSError:
            sock.close()
            raise
        return sock, "localhost"
    host, port = target
    family, kind, _, _, address = (await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM if scheme == "tcp" else socket.SOCK_DGRAM))[0]
    sock = socket.socket(family, kind)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
    except OSError:
        sock.close()
        raise
    local_host, local_port = sock.getsockname()[:2]
    host_text = f"[{local_host}]" if ":" in local_host else local_host
    return sock, f"{host_text}:{local_port}"


def _connect_local() -> socket.socket:
    """Go's unixSyslog: the first local syslog socket that answers."""
    for path in _LOCAL_SYSLOG_PATHS:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            return sock
    raise OSError("Unix syslog delivery error")


def _dial_error(scheme: str, target: str | tuple[str, int], exc: OSError) -> str:
    if not scheme:
        return "Unix syslog delivery error"
    address = target if isinstance(target, str) else f"{target[0]}:{target[1]}"
    reason = exc.strerror.lower() if exc.strerror else str(exc) or "i/o timeout"
    return f"dial {scheme} {address}: connect: {reason}"
