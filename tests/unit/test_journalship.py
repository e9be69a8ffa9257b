"""The journald driver's entries: Docker's field names and values, partial
messages, and the native protocol's encoding."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from berth.container.v1 import container_pb2
from services.container import journalship, logdrivers
from services.container.logs import LogLine, read_lines

CID = "4c536f2029d08c9009f2254225c900e2ff95e950d420a43cd7f27ad2d62c2a65"


def parse(entry: bytes) -> dict[str, bytes]:
    """The native protocol read back (journald's side of it)."""
    fields: dict[str, bytes] = {}
    while entry:
        line, _, rest = entry.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            entry = rest
        else:
            key, (size,) = line, struct.unpack("<Q", rest[:8])
            value, entry = rest[8:8 + size], rest[8 + size + 1:]
        fields[key.decode()] = value
    return fields


def test_attribute_names_as_moby_sanitizes_them() -> None:
    assert logdrivers.journal_field("com.example-key") == "COM_EXAMPLE_KEY"
    assert logdrivers.journal_field("_private.x") == "PRIVATE_X"
    assert logdrivers.journal_field("..a") == "A"
    assert logdrivers.journal_field("B_x9") == "B_X9"
    assert logdrivers.journal_field("é") == ""


def test_fields_and_details_of_a_container() -> None:
    config = container_pb2.ContainerConfig(image="busybox", labels={"a.b": "x y"},
                                           env=["B_x=2", "C=3"])
    log_config = container_pb2.LogConfig(type="journald", config={
        "labels": "a.b,missing", "env": "B_x", "tag": "{{.Name}}/{{.ID}}"})
    fields = journalship.fields_of(log_config, config, CID, "/web", "sha256:abc")
    assert fields == {
        "CONTAINER_ID": CID[:12], "CONTAINER_ID_FULL": CID, "CONTAINER_NAME": "web",
        "CONTAINER_TAG": f"web/{CID[:12]}", "IMAGE_NAME": "busybox",
        "SYSLOG_IDENTIFIER": f"web/{CID[:12]}", "A_B": "x y", "B_X": "2"}
    assert logdrivers.extra_attributes(log_config, config, "web") == {"A_B": "x y", "B_X": "2"}


def sink() -> journalship.JournalSink:
    left, right = socket.socketpair()
    right.close()
    return journalship.JournalSink(left, {"CONTAINER_ID": CID[:12]})


def test_a_line_is_one_entry_without_its_newline() -> None:
    journal = sink()
    out, err = (parse(entry) for line in (LogLine("stdout", b"hi\n", 1_700_000_000_5 * 10**8),
                                           LogLine("stderr", b"oops\n", 1_700_000_001 * 10**9))
                for entry in journal.entries(line))
    assert out["MESSAGE"] == b"hi" and out["PRIORITY"] == b"6"
    assert err["MESSAGE"] == b"oops" and err["PRIORITY"] == b"3"
    assert out["SYSLOG_TIMESTAMP"] == b"2023-11-14T22:13:20.5Z"
    assert (out["CONTAINER_LOG_ORDINAL"], err["CONTAINER_LOG_ORDINAL"]) == (b"1", b"2")
    assert out["CONTAINER_LOG_EPOCH"] == err["CONTAINER_LOG_EPOCH"]
    assert len(out["CONTAINER_LOG_EPOCH"]) == 64
    assert not any(key.startswith("CONTAINER_PARTIAL") for key in out)


def test_long_and_unended_lines_are_partial_messages() -> None:
    journal = sink()
    size = journalship.MAX_MESSAGE
    long = [parse(e) for e in journal.entries(LogLine("stdout", b"x" * (2 * size + 5) + b"\n", 1))]
    assert [len(e["MESSAGE"]) for e in long] == [size, size, 5]
    assert [e["CONTAINER_PARTIAL_ORDINAL"] for e in long] == [b"1", b"2", b"3"]
    assert [e["CONTAINER_PARTIAL_LAST"] for e in long] == [b"false", b"false", b"true"]
    assert [e.get("CONTAINER_PARTIAL_MESSAGE") for e in long] == [b"true", b"true", None]
    assert len({e["CONTAINER_PARTIAL_ID"] for e in long}) == 1
    (tail,) = [parse(e) for e in journal.entries(LogLine("stdout", b"end", 2))]
    assert tail["MESSAGE"] == b"end" and tail["CONTAINER_PARTIAL_MESSAGE"] == b"true"
    assert tail["CONTAINER_PARTIAL_LAST"] == b"false"
    assert tail["CONTAINER_PARTIAL_ID"] != long[0]["CONTAINER_PARTIAL_ID"]


def test_values_with_newlines_are_sent_with_their_length() -> None:
    entry = journalship.native_entry(b"", {"A": "two\nlines", "B": "plain"})
    assert entry == (b"MESSAGE=\nA\n" + struct.pack("<Q", 9) + b"two\nlines\nB=plain\n")
    assert parse(entry) == {"MESSAGE": b"", "A": b"two\nlines", "B": b"plain"}


def test_output_no_newline_ended_is_read_last_without_one(tmp_path: Path) -> None:
    log = tmp_path / "container.log"
    log.write_bytes(b"2023-11-14T22:13:20.1Z stdout F out\n"
                    b"2023-11-14T22:13:20.2Z stdout P li\n"
                    b"2023-11-14T22:13:20.3Z stderr F err\n"
                    b"2023-11-14T22:13:20.4Z stdout P ne\n")
    lines, end = read_lines(log)
    assert [(line.stream, line.data) for line in lines] == [
        ("stdout", b"out\n"), ("stderr", b"err\n"), ("stdout", b"line")]
    assert lines[-1].time_nano == 1_700_000_000_400_000_000
    assert end == log.stat().st_size
