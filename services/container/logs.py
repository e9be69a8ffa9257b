"""Container logs from conmon's k8s-file log:
`<RFC3339Nano> stdout|stderr F|P <message>` per line, P for a partial line."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import gzip
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_POLL_SECONDS = 0.1
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class LogLine:
    stream: str          # stdout, stderr
    data: bytes
    time_nano: int


def parse_time(text: bytes) -> int:
    """RFC 3339 with nanoseconds and an offset -> ns since the epoch."""
    stamp = text.decode()
    date, _, rest = stamp.partition("T")
    clock, offset_sign, offset = rest[:8], "", "00:00"
    fraction_and_zone = rest[8:]
    for sign in ("+", "-", "Z"):
        if sign in fraction_and_zone:
            fraction, _, offset = fraction_and_zone.partition(sign)
            offset_sign = sign
            break
    else:
        fraction = fraction_and_zone
    seconds = calendar.timegm(time.strptime(f"{date}T{clock}", "%Y-%m-%dT%H:%M:%S"))
    nanos = int(fraction.lstrip(".").ljust(9, "0")[:9] or 0)
    if offset_sign in ("+", "-") and offset:
        hours, _, minutes = offset.partition(":")
        shift = int(hours) * 3600 + int(minutes or 0) * 60
        seconds -= shift if offset_sign == "+" else -shift
    return seconds * 1_000_000_000 + nanos


def rfc3339(ns: int) -> str:
    """Go's RFC3339Nano: trailing zeros of the fraction trimmed."""
    if not ns:
        return ZERO_TIME
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


class _Assembler:
    """Joins partial (P) records into whole lines."""

    def __init__(self) -> None:
        self._partial: dict[str, list[bytes]] = {}
        self._partial_stamp: dict[str, bytes] = {}

    def feed(self, raw: bytes) -> LogLine | None:
        parts = raw.split(b" ", 3)
        if len(parts) < 3:
            return None
        stamp, stream, tag = parts[0], parts[1].decode(), parts[2]
        message = parts[3] if len(parts) == 4 else b""
        pending = self._partial.setdefault(stream, [])
        pending.append(message)
        if tag == b"P":
            self._partial_stamp[stream] = stamp
            return None
        data = b"".join(pending) + b"\n"
        pending.clear()
        return LogLine(stream, data, parse_time(stamp))

    def rest(self) -> list[LogLine]:
        """What no newline has ended yet (a container's last output without
        one): lines without their newline, as Docker shows them."""
        rest = [LogLine(stream, b"".join(pending), parse_time(self._partial_stamp[stream]))
                for stream, pending in self._partial.items() if pending]
        self._partial.clear()
        return sorted(rest, key=lambda line: line.time_nano)


def rotated(path: Path, index: int, gzipped: bool = False) -> Path:
    return path.with_name(f"{path.name}.{index}" + (".gz" if gzipped else ""))


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of a log (log.N or, compressed, log.N.gz), oldest first."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d+)(\.gz)?")
    found = [(int(match.group(1)), file) for file in path.parent.glob(path.name + ".*")
             if (match := pattern.fullmatch(file.name))]
    return [file for _, file in sorted(found, key=lambda item: -item[0])]


def _read(file: Path) -> bytes:
    if file.suffix == ".gz":
        with gzip.open(file, "rb") as handle:
            return handle.read()
    return file.read_bytes()


def read_lines(path: Path) -> tuple[list[LogLine], int]:
    """The lines of the log and its rotated files (oldest first), the output
    no newline has ended yet last, and the offset in the live file where the
    records end (a follower continues there)."""
    assembler = _Assembler()
    lines: list[LogLine] = []
    end = 0
    for file in [*rotated_files(path), path]:
        try:
            raw = _read(file)
        except FileNotFoundError:
            continue
        end = raw.rfind(b"\n") + 1
        for record in raw[:end].split(b"\n"):
            if record and (line := assembler.feed(record)):
                lines.append(line)
    return [*lines, *assembler.rest()], end


def select(lines: list[LogLine], streams: set[str], since: int, until: int,
           tail: str) -> list[LogLine]:
    chosen = [line for line in lines if line.stream in streams
              and (not since or line.time_nano >= since)
              and (not until or line.time_nano <= until)]
    if tail and tail != "all":
        count = int(tail)
        chosen = chosen[-count:] if count > 0 else []
    return chosen


async def follow(path: Path, offset: int, streams: set[str], until: int,
                 still_running: Callable[[], bool]) -> AsyncIterator[LogLine]:
    """Lines appended to the log after `offset`, until the container stops.

    conmon truncates the file when it rotates it; reading starts over then.
    """
    assembler = _Assembler()
    buffer = b""
    while True:
        running = still_running()
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < offset:
            offset = 0
        if size > offset:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset)
            offset += len(chunk)
            buffer += chunk
            *records, buffer = buffer.split(b"\n")
            for record in records:
                line = assembler.feed(record) if record else None
                if line is None or line.stream not in streams:
                    continue
                if until and line.time_nano > until:
                    return
                yield line
        elif not running:
            for line in assembler.rest():
                if line.stream in streams:
                    yield line
            return
        await asyncio.sleep(_POLL_SECONDS)


async def ship(sock: socket.socket, path: Path, offset: int, still_running: Callable[[], bool],
               datagrams: Callable[[LogLine], Iterable[bytes]]) -> None:
    """Send what each line appended after `offset` becomes until the
    container stops, then close `sock`. A receiver that is away loses lines,
    never stops the container (Docker's non-blocking log drivers)."""
    loop = asyncio.get_running_loop()
    try:
        async for line in follow(path, offset, {"stdout", "stderr"}, 0, still_running):
            for datagram in datagrams(line):
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(sock, datagram)
    finally:
        sock.close()
