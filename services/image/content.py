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
from services.image.reference import DIGEST


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
        """The blob's file; a digest from a manifest or a client is checked
        first, so that it never names a path outside the store."""
        if not DIGEST.fullmatch(digest):
            raise InvalidArgument(f"invalid digest {digest!r}: not sha256 and 64 hex digits")
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
    def writer(self) -> Iterator[BlobWriter]:
        """Write a blob, named by the sha256 of what was written when the block
        ends; an exception inside the block leaves nothing behind."""
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".blob")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                writer = BlobWriter(file, path)
                yield writer
            os.replace(path, self.path(writer.digest))
        finally:
            path.unlink(missing_ok=True)

    def put(self, data: bytes) -> str:
        with self.writer() as writer:
            writer.write(data)
        return writer.digest

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> list[str]:
        return ["sha256:" + p.name for p in self.root.iterdir()]
