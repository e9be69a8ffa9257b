"""The build context: a tar (plain or compressed) or a lone Dockerfile,
unpacked into a private directory with `.dockerignore` applied.

Unpacked contexts are kept by the digest of their upload (and the Dockerfile
asked for), so a rebuild whose context did not change unpacks and hashes
nothing: its COPY digests are already known."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import blake3

from services.builder.copier import ContentDigests
from services.builder.dockerignore import Ignore, read_patterns
from services.common.errors import InvalidArgument
from services.common.relay import read_ahead

DOCKERIGNORE = ".dockerignore"
# Unpacked contexts kept for rebuilds: at most this many, of at most this
# many upload bytes in all (contexts in use by a build are never dropped).
KEPT_CONTEXTS = 8
KEPT_CONTEXT_BYTES = 1 << 30
# Uploads up to this size are spooled in memory (a rebuild of an unchanged
# context then writes nothing), bigger ones to a file under the workdir.
SPOOLED_IN_MEMORY = 64 << 20


@dataclass(eq=False)
class Context:
    root: Path
    dockerfile_text: str
    dockerfile_name: str
    digests: ContentDigests = field(default_factory=ContentDigests)
    upload_size: int = 0
    builds: int = 0                  # builds using it now
    last_used: float = 0.0

    def remove(self) -> None:
        self.digests.close()
        shutil.rmtree(self.root, ignore_errors=True)


class ContextCache:
    """The contexts of running and recent builds, by upload digest."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._kept: dict[str, Context] = {}

    async def acquire(self, chunks: AsyncIterator[bytes], dockerfile: str) -> Context:
        """The unpacked context of an upload: a kept one when the same bytes
        came before, else unpacked now. Give it back with `release`."""
        with contextlib.closing(_Spool(self._directory)) as upload:
            async for chunk in read_ahead(chunks):
                await upload.add(chunk)
            key = f"{upload.digest.hexdigest()}|{dockerfile}"
            context = self._kept.get(key)
            if context is None:
                context = await _unpack_in_thread(upload.reader(), self._directory,
                                                  dockerfile)
                context.upload_size = upload.size
                context = self._keep(key, context)
        context.builds += 1
        context.last_used = time.monotonic()
        return context

    def release(self, context: Context) -> None:
        context.builds -= 1
        if context.builds == 0 and context not in self._kept.values():
            context.remove()
        self._evict()

    def clear(self) -> None:
        """Drop every kept context no build is using (build cache prune)."""
        for key, context in list(self._kept.items()):
            if context.builds == 0:
                del self._kept[key]
                context.remove()

    def _keep(self, key: str, context: Context) -> Context:
        if key in self._kept:   # a concurrent build of the same upload was first
            context.remove()
            return self._kept[key]
        if context.upload_size <= KEPT_CONTEXT_BYTES:
            self._kept[key] = context
        return context

    def _evict(self) -> None:
        idle = sorted((c.last_used, key) for key, c in self._kept.items() if c.builds == 0)
        for _, key in idle:
            if (len(self._kept) <= KEPT_CONTEXTS
                    and sum(c.upload_size for c in self._kept.values()) <= KEPT_CONTEXT_BYTES):
                return
            self._kept.pop(key).remove()


async def _unpack_in_thread(upload: BinaryIO, workdir: Path, dockerfile: str) -> Context:
    """unpack() in a worker thread; a build cancelled meanwhile (its client
    went away) leaves no context behind once the thread is done."""
    unpacking = asyncio.ensure_future(asyncio.to_thread(unpack, upload, workdir, dockerfile))
    try:
        return await asyncio.shield(unpacking)
    except asyncio.CancelledError:
        unpacking.add_done_callback(_remove_unpacked)
        raise


def _remove_unpacked(unpacking: asyncio.Future[Context]) -> None:
    if not unpacking.cancelled() and unpacking.exception() is None:
        unpacking.result().remove()


class _Spool:
    """An upload as it arrives, and its digest. Up to SPOOLED_IN_MEMORY
    bytes its chunks are kept as they came, nothing copied (a rebuild of an
    unchanged context only hashes them); beyond, they go to a file."""

    def __init__(self, directory: Path) -> None:
        self.digest = blake3.blake3()
        self.size = 0
        self._directory = directory
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None

    async def add(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        if self._file is None and self.size <= SPOOLED_IN_MEMORY:
            self._chunks.append(chunk)
            return
        if self._file is None:
            # Lives until close(), past this call.
            self._file = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115
        pending, self._chunks = [*self._chunks, chunk], []
        await asyncio.to_thread(self._file.writelines, pending)

    def reader(self) -> BinaryIO:
        if self._file is None:
            return io.BytesIO(b"".join(self._chunks))
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._chunks.clear()
        if self._file is not None:
            self._file.close()


def _is_archive(upload: BinaryIO) -> bool:
    try:
        return tarfile.is_tarfile(upload)
    except OSError:
        return False
    finally:
        upload.seek(0)


def _extract(source: BinaryIO, dest: Path, digests: ContentDigests) -> dict[Path, float]:
    """Unpack refusing members that would land outside `dest`, handing each
    regular file to `digests` as soon as it is written; returns the
    directories' mtimes, which what is unpacked into them changes."""
    directories = {}
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in _members(tar):
                name = os.path.normpath(member.name.lstrip("/"))
                if name == ".." or name.startswith("../"):
                    raise InvalidArgument(f'"{member.name}" is outside of "{dest}"')
                tar.extract(member, dest, filter=_inside_context)
                if member.isreg():
                    digests.add(dest / name)
                elif member.isdir():
                    directories[dest / name] = member.mtime
        return directories
    except tarfile.OutsideDestinationError as exc:
        raise InvalidArgument(f'"{exc.tarinfo.name}" is outside of "{dest}"') from exc
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"failed to read the build context: {exc}") from exc


def _inside_context(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "tar" filter, and hard links kept to the context: tarfile
    would link an absolute target on the host, and follow symlinks already
    unpacked to reach a relative one. As in Docker, an absolute target counts
    from the context root; one that leads outside or is missing is refused
    (tarfile raises KeyError for the latter)."""
    member = tarfile.tar_filter(member, dest)
    if not member.islnk():
        return member
    linkname = member.linkname.lstrip("/")
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, linkname))
    shown = f'hard link "{member.name}" -> "{member.linkname}"'
    if os.path.commonpath([target, root]) != root:
        raise InvalidArgument(f"{shown} leads outside of the build context")
    if not os.path.lexists(target):
        raise InvalidArgument(f"{shown}: no such file in the build context")
    return member.replace(linkname=linkname, deep=False)


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Every member; an archive whose last block lacks its padding (the
    docker CLI sends one for `-f` outside the context) ends there."""
    while True:
        try:
            member = tar.next()
        except tarfile.ReadError as exc:
            if tar.members and str(exc) == "unexpected end of data":
                return
            raise
        if member is None:
            return
        yield member


def _apply_dockerignore(root: Path, keep: set[str]) -> Ignore:
    """Remove what .dockerignore excludes (except `keep`, read first and
    removed after when excluded, as Docker does); directories go once
    nothing in them is left, so `!` exceptions below them stay."""
    path = root / DOCKERIGNORE
    is_file = path.exists() and stat.S_ISREG(path.lstat().st_mode)
    ignore = Ignore(read_patterns(path.read_text(errors="replace")) if is_file else [])
    if not ignore.patterns:
        return ignore
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            host = os.path.join(dirpath, name)
            rel = os.path.relpath(host, root)
            if rel in keep or not ignore.excluded(rel):
                continue
            if os.path.isdir(host) and not os.path.islink(host):
                with contextlib.suppress(OSError):  # not empty: something is kept
                    os.rmdir(host)
            else:
                os.unlink(host)
    return ignore


def _restore_mtimes(directories: dict[Path, float]) -> None:
    """Give the context's directories their mtimes from the upload back
    (COPY of a directory keeps them, as in dockerd)."""
    for path, mtime in directories.items():
        with contextlib.suppress(FileNotFoundError):   # removed by .dockerignore
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def unpack(upload: BinaryIO, workdir: Path, dockerfile: str) -> Context:
    """Turn the uploaded bytes into a context directory and read its Dockerfile."""
    name = dockerfile or "Dockerfile"
    if "\0" in name:
        raise InvalidArgument(f"Cannot locate specified Dockerfile: {name}")
    root = Path(tempfile.mkdtemp(prefix="context-", dir=workdir))
    digests = ContentDigests()
    try:
        ignore = Ignore([])
        if _is_archive(upload):
            directories = _extract(upload, root, digests)
            ignore = _apply_dockerignore(root, {DOCKERIGNORE, os.path.normpath(name.lstrip("/"))})
            _restore_mtimes(directories)
        else:
            with open(root / "Dockerfile", "wb") as lone:
                shutil.copyfileobj(upload, lone)
            name = "Dockerfile"
        path = (root / name.lstrip("/")).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            if not dockerfile and (root / "dockerfile").is_file():
                path, name = root / "dockerfile", "dockerfile"
            else:
                raise InvalidArgument(f"Cannot locate specified Dockerfile: {name}")
        text = path.read_text(errors="replace")
        for read in (name, DOCKERIGNORE):
            if ignore.names(read):
                (root / read.lstrip("/")).unlink(missing_ok=True)
        return Context(root=root, dockerfile_text=text, dockerfile_name=name, digests=digests)
    except BaseException:
        digests.close()
        shutil.rmtree(root, ignore_errors=True)
        raise
