"""Layer tars unpacked once into directories keyed by chain ID (the
entries written by extraction.py, which cannot leave the layer directory)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import shutil
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from services.common.errors import InvalidArgument
from services.image.extraction import LayerWriter

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_SIZE = 1 << 20
_GZIP_WBITS = zlib.MAX_WBITS | 16  # gzip header and trailer


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The OCI chain ID of every prefix of `diff_ids`."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            text = f"{chains[-1]} {diff_id}".encode()
            chains.append("sha256:" + hashlib.sha256(text).hexdigest())
    return chains


def compression_of(head: bytes) -> str:
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return ""


class GzipReader:
    """Inflates the gzip members in `source` a megabyte of input at a time
    (Python 3.11's GzipFile reads 8 KiB per step, which costs a lot of CPU on
    big layers); zlib checks each member's CRC and length."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.inflater = zlib.decompressobj(_GZIP_WBITS)
        self.input = b""

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(READ_SIZE), b""))
        if size == 0:  # zlib reads a max_length of 0 as no limit
            return b""
        try:
            return self._inflate(size)
        except zlib.error as exc:
            raise gzip.BadGzipFile(f"invalid gzip data: {exc}") from exc

    def _inflate(self, size: int) -> bytes:
        while True:
            if self.inflater.eof:
                rest = self.inflater.unused_data.lstrip(b"\0")
                while not rest:  # another member may follow, after zero padding
                    more = self.source.read(READ_SIZE)
                    if not more:
                        return b""
                    rest = more.lstrip(b"\0")
                self.inflater = zlib.decompressobj(_GZIP_WBITS)
                self.input = rest
            if not self.input:
                self.input = self.source.read(READ_SIZE)
                if not self.input:
                    raise EOFError("compressed file ended before the end-of-stream "
                                   "marker was reached")
            data = self.inflater.decompress(self.input, size)
            self.input = self.inflater.unconsumed_tail
            if data:
                return data


def decompressed(source: BinaryIO) -> BinaryIO:
    """A reader of the uncompressed tar in `source` (gzip, zstd or plain)."""
    head = source.read(4)
    source.seek(0)
    kind = compression_of(head)
    if kind == "gzip":
        return GzipReader(source)  # type: ignore[return-value]
    if kind == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(source)  # type: ignore[return-value]
    return source


class HashingReader:
    """Passes reads through while hashing them (the diff ID of a layer)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hasher.hexdigest()


@dataclass
class Unpacked:
    diff_id: str
    size: int


def unpack(source: BinaryIO, dest: Path) -> Unpacked:
    """Unpack a (possibly compressed) layer tar into the empty dir `dest`."""
    reader = HashingReader(decompressed(source))
    writer = LayerWriter(str(dest))
    try:
        with tarfile.open(fileobj=reader, mode="r|",  # type: ignore[call-overload]
                          bufsize=READ_SIZE, copybufsize=READ_SIZE) as tar:
            for member in tar:
                writer.add(tar, member)
        writer.finish()
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
        raise InvalidArgument(f"invalid layer tar: {exc}") from exc
    finally:
        writer.close()
    return Unpacked(diff_id=reader.drain(), size=writer.size)


class LayerDirs:
    """The unpacked layer directories: D/image/layers/<chain hex>."""

    def __init__(self, root: Path) -> None:
        self.root = root / "layers"
        self.root.mkdir(parents=True, exist_ok=True)
        self.empty = self.root / "empty"
        self.empty.mkdir(exist_ok=True)
        for leftover in self.root.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def path(self, chain_id: str) -> Path:
        return self.root / chain_id.removeprefix("sha256:")

    def unpack(self, source: BinaryIO, chain_id: str, diff_id: str) -> Unpacked:
        """Unpack into a scratch dir, check the diff ID, then move it to the
        dir of `chain_id`; a failure leaves nothing behind."""
        scratch = self.root / f".tmp-{uuid.uuid4().hex}"
        scratch.mkdir()
        try:
            result = unpack(source, scratch)
            if result.diff_id != diff_id:
                raise InvalidArgument(f"layer diff ID mismatch: expected {diff_id}, "
                                      f"got {result.diff_id}")
            final = self.path(chain_id)
            if final.exists():
                shutil.rmtree(scratch)
            else:
                os.rename(scratch, final)
            return result
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def remove(self, chain_id: str) -> None:
        """Take the dir out of place at once and delete its files in a worker
        thread (called on the event loop; leftovers go at the next start)."""
        doomed = self.root / f".tmp-gc-{uuid.uuid4().hex}"
        try:
            os.rename(self.path(chain_id), doomed)
        except FileNotFoundError:
            return
        asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, doomed, True)

    def existing(self) -> set[str]:
        return {"sha256:" + p.name for p in self.root.iterdir()
                if not p.name.startswith(".") and p.name != "empty"}
