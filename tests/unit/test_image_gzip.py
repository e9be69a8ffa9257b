"""The gzip reader that unpacks pulled layers: same bytes as the gzip module,
every member, and errors on damaged data."""

from __future__ import annotations

import gzip
import io
import os

import pytest

from services.image.layers import decompressed

DATA = os.urandom(3 << 20) + b"a" * (2 << 20)


def read_all(blob: bytes, size: int) -> bytes:
    reader = decompressed(io.BytesIO(blob))
    return b"".join(iter(lambda: reader.read(size), b""))


@pytest.mark.parametrize("size", [1, 4096, 1 << 20, 5 << 20])
def test_matches_gzip_module(size: int) -> None:
    blob = gzip.compress(DATA[:200_000] if size == 1 else DATA, mtime=0)
    assert read_all(blob, size) == gzip.decompress(blob)


def test_concatenated_members_and_zero_padding() -> None:
    blob = gzip.compress(DATA) + gzip.compress(b"tail") + b"\0" * 16
    assert read_all(blob, 1 << 20) == DATA + b"tail"
    assert decompressed(io.BytesIO(blob)).read() == DATA + b"tail"


def test_zero_size_read_returns_nothing() -> None:
    assert decompressed(io.BytesIO(gzip.compress(b"abc"))).read(0) == b""


def test_truncated_stream_fails() -> None:
    with pytest.raises(EOFError):
        read_all(gzip.compress(DATA)[:-100], 1 << 20)


def test_bad_checksum_fails() -> None:
    blob = gzip.compress(DATA)
    damaged = blob[:-8] + bytes(4) + blob[-4:]
    with pytest.raises(gzip.BadGzipFile):
        read_all(damaged, 1 << 20)
