"""The journald log driver: the lines conmon writes to the container's log,
followed from where the start found the file and sent to the local journal
with Docker's fields (moby's daemon/logger/journald).

Each entry carries MESSAGE (the line without its newline), PRIORITY (6 for
stdout, 3 for stderr), CONTAINER_ID, CONTAINER_ID_FULL, CONTAINER_NAME,
CONTAINER_TAG and SYSLOG_IDENTIFIER (the `tag` option, `{{.ID}}` by
default), IMAGE_NAME, the labels and env variables the options name as
journal fields (logdrivers.journal_attributes), SYSLOG_TIMESTAMP, and
CONTAINER_LOG_EPOCH (one per start) with CONTAINER_LOG_ORDINAL (1, 2, ...).
A line longer than Docker's 16 KiB buffer goes as partial messages
(CONTAINER_PARTIAL_ID, _ORDINAL, _LAST, and CONTAINER_PARTIAL_MESSAGE=true
on all but the last), as does output that no newline ended.

The entries go over journald's native protocol (a datagram per entry to
/run/systemd/journal/socket, systemd's JOURNAL_NATIVE_PROTOCOL), sent from
the event loop without blocking it."""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import Internal
from services.container import logdrivers, logs

_PRIORITY = {"stdout": "6", "stderr": "3"}
# Docker's log copier hands a driver at most this much of a line at a time.
MAX_MESSAGE = 16 * 1024


class JournalSink:
    """The journal's socket and the fields every entry of one container carries."""

    def __init__(self, sock: socket.socket, fields: dict[str, str]) -> None:
        self._sock = sock
        self._fields = {**fields, "CONTAINER_LOG_EPOCH": secrets.token_hex(32)}
        self._ordinal = 0

    @classmethod
    async def connect(cls, fields: dict[str, str]) -> JournalSink:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.connect(str(logdrivers.JOURNAL_SOCKET))
        except OSError:
            sock.close()
            raise Internal("failed to initialize logging driver: journald is not enabled on "
                           "this host") from None
        sock.setblocking(False)
        return cls(sock, fields)

    def entries(self, line: logs.LogLine) -> Iterator[bytes]:
        """The datagrams of one line: one entry, or its partial messages."""
        text = line.data.removesuffix(b"\n")
        ended = line.data.endswith(b"\n")
        chunks = [text[start:start + MAX_MESSAGE]
                  for start in range(0, len(text), MAX_MESSAGE)] or [b""]
        partial_id = secrets.token_hex(32) if len(chunks) > 1 or not ended else ""
        for ordinal, chunk in enumerate(chunks, start=1):
            self._ordinal += 1
            fields = {**self._fields, "PRIORITY": _PRIORITY[line.stream],
                      "SYSLOG_TIMESTAMP": logs.rfc3339(line.time_nano),
                      "CONTAINER_LOG_ORDINAL": str(self._ordinal)}
            if partial_id:
                last = ended and ordinal == len(chunks)
                fields |= {"CONTAINER_PARTIAL_ID": partial_id,
                           "CONTAINER_PARTIAL_ORDINAL": str(ordinal),
                           "CONTAINER_PARTIAL_LAST": "true" if last else "false"}
                if not last:
                    fields["CONTAINER_PARTIAL_MESSAGE"] = "true"
            yield native_entry(chunk, fields)

    async def close(self) -> None:
        self._sock.close()

    async def ship(self, path: Path, offset: int, still_running: Callable[[], bool]) -> None:
        """Send the lines appended after `offset` until the container stops."""
        await logs.ship(self._sock, path, offset, still_running, self.entries)


def native_entry(message: bytes, fields: dict[str, str]) -> bytes:
    """One entry in the native protocol: `KEY=value\\n`, or for a value with
    a newline `KEY\\n`, its length as 64-bit little endian, the value, `\\n`."""
    entry = bytearray()
    for key, value in [("MESSAGE", message), *((k, v.encode()) for k, v in fields.items())]:
        if b"\n" in value:
            entry += key.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
        else:
            entry += key.encode() + b"=" + value + b"\n"
    return bytes(entry)


def fields_of(log_config: container_pb2.LogConfig, container: container_pb2.ContainerConfig,
              cid: str, name: str, image_id: str) -> dict[str, str]:
    """Docker's fields of every entry of the container (moby's journald.New)."""
    tag = logdrivers.shipped_tag(dict(log_config.config), container, cid, name, image_id)
    return {"CONTAINER_ID": cid[:12], "CONTAINER_ID_FULL": cid,
            "CONTAINER_NAME": name.lstrip("/"), "CONTAINER_TAG": tag,
            "IMAGE_NAME": container.image, "SYSLOG_IDENTIFIER": tag,
            **logdrivers.journal_attributes(log_config, container)}
