"""Content-addressed blobs under D/image/blobs/sha256/<hex>, verified on write."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from services.common.errors import InvalidArgument
from services.image.layers import decompressed

CHUNK = 1 << 20


class BlobWriter:
    """A blob being written: hashes as it goes, lands only when committed."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self.file = file
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hasher.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "blobs" / "sha256"
        self.tmp = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest.removeprefix("sha256:")

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh scratch path on the same filesystem (removed by the caller)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=suffix)
        os.close(fd)
        return Path(name)

    @contextmanager
    def writer(self, expected: str = "") -> Iterator[BlobWriter]:
        """Write a blob; on leaving, verify `expected` (if given) and commit it.
        An exception or a digest mismatch leaves nothing behind."""
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".blob")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                writer = BlobWriter(file, path)
                yield writer
            if expected and writer.digest != expected:
                raise InvalidArgument(
                    f"digest mismatch: expected {expected}, got {writer.digest}")
            os.replace(path, self.path(writer.digest))
        finally:
            path.unlink(missing_ok=True)

    def put(self, data: bytes, expected: str = "") -> str:
        with self.writer(expected) as writer:
            writer.write(data)
        return writer.digest

    def put_file(self, source: BinaryIO, expected: str = "") -> tuple[str, int]:
        with self.writer(expected) as writer:
            while chunk := source.read(CHUNK):
                writer.write(chunk)
        return writer.digest, writer.size

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return ["sha256:" + p.name for p in self.root.iterdir()]

    def put_decompressed(self, source: Path) -> str:
        """Store the uncompressed form of a (maybe gzip/zstd) tar file."""
        with source.open("rb") as raw:
            return self.put_file(decompressed(raw))[0]
