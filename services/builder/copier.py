"""COPY and ADD: where their sources are (the build context, or an image's
files fetched as needed), which files go where, their digest for the cache,
and the layer tar that puts them in the image."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import os
import posixpath
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import blake3

from services.common import scoped
from services.common.errors import InvalidArgument

_WILDCARD = set("*?[")


@dataclass(frozen=True)
class Owner:
    uid: int = 0
    gid: int = 0


@dataclass
class Entry:
    """One path of the new layer: where it goes and where its bytes are."""

    dest: str                      # absolute path in the image
    host: Path | None              # None: a directory the copy creates
    archive: bool = False          # ADD: a local tar to unpack at dest


@dataclass(frozen=True)
class Source:
    """One source as found: its name in its tree, and the local path that
    holds it (symlinks followed inside the tree)."""

    name: str
    host: Path


@dataclass(frozen=True)
class Item:
    """One path a copy reads: a source, or a path below a directory source."""

    source: Source
    below: str                     # "" for the source itself
    host: Path
    in_dir: bool                   # whether the source is a directory

    @property
    def copies_dir_itself(self) -> bool:
        """A directory source's own entry: its content is copied, not it."""
        return self.in_dir and not self.below


@dataclass
class CopySources:
    """What a COPY/ADD reads, and how the step's history line names it."""

    sources: list[Source]
    items: list[Item]
    digest: str

    @property
    def kind(self) -> str:
        """file, dir or multi: how Docker names the sources in history."""
        if len(self.sources) > 1:
            return "multi"
        return "dir" if self.items[0].in_dir else "file"


class ContentDigests:
    """BLAKE3 of regular files for COPY's cache key. A context's files are
    hashed in the background as soon as they are unpacked; any other file
    when asked. A file hashed early must not change afterwards, which holds
    for context directories (builds only read them)."""

    _pool: ClassVar[ThreadPoolExecutor | None] = None   # shared by all builds

    def __init__(self) -> None:
        self._early: dict[Path, Future[bytes]] = {}

    @classmethod
    def _workers(cls) -> ThreadPoolExecutor:
        # Hashing big buffers releases the GIL: one worker per core.
        if cls._pool is None:
            cls._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                           thread_name_prefix="digest")
        return cls._pool

    def add(self, path: Path) -> None:
        self._early[path] = self._workers().submit(_file_digest, path)

    def of(self, paths: list[Path]) -> list[bytes]:
        futures = [self._early.get(p) or self._workers().submit(_file_digest, p)
                   for p in paths]
        return [f.result() for f in futures]

    def close(self) -> None:
        """The files are going away: hash no more of them."""
        for future in self._early.values():
            future.cancel()


class SourceTree(Protocol):
    """Where COPY reads from: the build context, or an image's files."""

    digests: ContentDigests

    async def fetch(self, path: str) -> Path | None:
        """A local path holding `path` of the tree (absolute or relative to
        its root), symlinks followed inside the tree; None when missing."""


class ContextTree:
    """The build context's directory."""

    def __init__(self, root: Path, digests: ContentDigests | None = None) -> None:
        self.root = root
        self.digests = digests or ContentDigests()

    async def fetch(self, path: str) -> Path | None:
        return self._in_context(scoped.resolve(path, self._read_link))

    def _in_context(self, parts: list[str]) -> Path | None:
        path = self.root.joinpath(*parts)
        return path if os.path.lexists(path) else None

    def _read_link(self, parts: list[str]) -> str | None:
        host = self._in_context(parts)
        return os.readlink(host) if host is not None and host.is_symlink() else None


def is_plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def walk(top: Path) -> Iterator[tuple[str, Path]]:
    """Every path below directory `top` (relative name, local path), sorted,
    symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            host = Path(dirpath) / name
            yield os.path.relpath(host, top), host


def clean_source(src: str, instruction: str) -> str:
    cleaned = posixpath.normpath(src)
    if cleaned == ".." or cleaned.startswith("../"):
        raise InvalidArgument(
            f"{instruction} failed: forbidden path outside the build context: {src} ()")
    return cleaned.lstrip("/") if cleaned != "/" else ""


def _matches(pattern: str, path: str) -> bool:
    """Go's filepath.Match: wildcards never cross a `/`."""
    pattern_parts, path_parts = pattern.split("/"), path.split("/")
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(p, q) for q, p in zip(pattern_parts, path_parts, strict=True))


def _fixed_prefix(pattern: str) -> str:
    """The directory a pattern's matches are under: its parts before the
    first one with a wildcard."""
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if _WILDCARD & set(part))
    return "/".join(parts[:fixed])


async def _matching(tree: SourceTree, pattern: str) -> list[Source]:
    prefix = _fixed_prefix(pattern)
    top = await tree.fetch(prefix)
    if top is None or not is_plain_dir(top):
        return []
    below = await asyncio.to_thread(lambda: list(walk(top)))
    found = []
    for name, host in below:
        rel = posixpath.join(prefix, name)
        if not _matches(pattern, rel):
            continue
        target = await tree.fetch(rel) if host.is_symlink() else host
        if target is not None:
            found.append(Source(rel, target))
    return found


async def locate(tree: SourceTree, sources: list[str], instruction: str) -> list[Source]:
    """Each source as found in the tree, wildcards expanded."""
    found: list[Source] = []
    for src in sources:
        rel = clean_source(src, instruction)
        if _WILDCARD & set(rel):
            found.extend(await _matching(tree, rel))
            continue
        host = await tree.fetch(rel)
        if host is None:
            raise InvalidArgument(
                f"{instruction} failed: file not found in build context or excluded by "
                f".dockerignore: stat {src.lstrip('/')}: file does not exist")
        found.append(Source(rel, host))
    if not found:
        raise InvalidArgument(f"{instruction} failed: no source files were specified")
    return found


def names_directory(dest: str) -> bool:
    """Whether a destination says it is a directory (ends in / or /.)."""
    return dest.endswith("/") or dest.endswith("/.")


def destination(dest: str, workdir: str) -> str:
    """The destination as an absolute, clean path in the image."""
    return posixpath.normpath(posixpath.join(workdir or "/", dest))


def read_sources(sources: list[Source], dest: str, instruction: str,
                 digests: ContentDigests) -> CopySources:
    """Every path the sources copy (directories walked) and their digest."""
    if len(sources) > 1 and not names_directory(dest):
        raise InvalidArgument(
            f"When using {instruction} with more than one source file, the destination "
            "must be a directory and end with a /")
    items: list[Item] = []
    for source in sources:
        in_dir = is_plain_dir(source.host)
        items.append(Item(source, "", source.host, in_dir))
        if in_dir:
            items.extend(Item(source, name, host, True) for name, host in walk(source.host))
    return CopySources(sources, items, _digest(items, digests))


def is_archive(path: Path) -> bool:
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


def plan_copy(copy: CopySources, dest: str, into_dir: bool, instruction: str) -> list[Entry]:
    """Where every path lands, following Docker's destination rules: `dest`
    is absolute and clean, `into_dir` whether it names a directory (by its
    spelling or in the image)."""
    entries = []
    for item in copy.items:
        if item.copies_dir_itself:
            entries.append(Entry(dest=dest, host=None))
        elif item.in_dir:
            entries.append(Entry(dest=posixpath.join(dest, item.below), host=item.host))
        elif instruction == "ADD" and is_archive(item.host):
            entries.append(Entry(dest=dest, host=item.host, archive=True))
        else:
            name = posixpath.basename(item.source.name)
            entries.append(Entry(dest=posixpath.join(dest, name) if into_dir else dest,
                                 host=item.host))
    return entries


def _digest(items: list[Item], digests: ContentDigests) -> str:
    """Names, content and metadata (not mtimes) of everything copied."""
    infos = [None if i.copies_dir_itself else os.lstat(i.host) for i in items]
    regular = [i.host for i, info in zip(items, infos, strict=True)
               if info is not None and stat.S_ISREG(info.st_mode)]
    contents = dict(zip(regular, digests.of(regular), strict=True))
    digest = hashlib.sha256()
    for item, info in zip(items, infos, strict=True):
        digest.update(posixpath.join(item.source.name, item.below).encode() + b"\0")
        if info is None:
            continue
        digest.update(f"{info.st_mode:o} {info.st_uid} {info.st_gid} {info.st_size}\0".encode())
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.readlink(item.host).encode())
        elif item.host in contents:
            digest.update(contents[item.host])
    return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    return blake3.blake3().update_mmap(path).digest()


CHOWN_ERROR = "unable to convert uid/gid chown string to host mapping: "


def _ids(text: str) -> dict[str, int]:
    """name -> ID from /etc/passwd or /etc/group text."""
    table = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            table.setdefault(fields[0], int(fields[2]))
    return table


def _chown_parts(spec: str) -> tuple[str, str]:
    """--chown=user[:group] as (user, group); without a group the user's
    text names the group too (a name then needs a group of that name), as
    dockerd 20.10's parseChownFlag does."""
    parts = spec.split(":")
    if len(parts) > 2:
        raise InvalidArgument(f"{CHOWN_ERROR}invalid chown string format: {spec}")
    return parts[0], parts[-1]


def chown_names(spec: str) -> tuple[bool, bool]:
    """Whether --chown=user[:group] names a user, and a group, to look up
    in the image's /etc/passwd and /etc/group."""
    if not spec:
        return False, False
    user, group = _chown_parts(spec)
    return not user.isdigit(), not group.isdigit()


def _lookup(name: str, table_text: str, kind: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    ids = _ids(table_text)
    if name not in ids:
        raise InvalidArgument(f"{CHOWN_ERROR}can't find {kind} for {what} {name}: "
                              f"no such {what}: {name}")
    return ids[name]


def parse_chown(spec: str, passwd: str = "", group_file: str = "") -> Owner:
    """--chown=user[:group], names looked up in the image's /etc/passwd and
    /etc/group text (needed only for what chown_names says)."""
    if not spec:
        return Owner()
    user, group = _chown_parts(spec)
    return Owner(_lookup(user, passwd, "uid", "user"), _lookup(group, group_file, "gid", "group"))


def parse_chmod(spec: str, instruction: str) -> int | None:
    if not spec:
        return None
    try:
        mode = int(spec, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"{instruction} failed: invalid chmod parameter: {spec}")
    return mode


class LayerWriter:
    """Writes an uncompressed layer tar: missing parent dirs, then entries.
    `owner` owns everything written; None: the copied paths keep their own
    owners (COPY --from without --chown, as the classic builder does) and
    the directories the copy makes are root's. The directories it makes
    have the time the layer is written as their mtime, as dockerd's have
    (the cache key does not depend on it: it is computed before)."""

    def __init__(self, tar: tarfile.TarFile, in_parent: Callable[[str], bool],
                 owner: Owner | None, chmod: int | None = None) -> None:
        self._tar = tar
        self._in_parent = in_parent     # whether a path exists in the parent image
        self._owner = owner
        self._chmod = chmod
        self._made_at = int(time.time())
        self._written: set[str] = set()

    def _own(self, info: tarfile.TarInfo, copied: bool = False) -> tarfile.TarInfo:
        if not (copied and self._owner is None):
            owner = self._owner or Owner()
            info.uid, info.gid = owner.uid, owner.gid
        info.uname = info.gname = ""
        return info

    def directory(self, path: str, mode: int = 0o755) -> None:
        """Add `path` and its missing parents, 0755 (existing ones keep their
        metadata)."""
        path = posixpath.normpath(path)
        if path == "/" or path in self._written:
            return
        self.directory(posixpath.dirname(path))
        if self._in_parent(path):
            return
        info = self._own(tarfile.TarInfo(path.lstrip("/")))
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, self._made_at
        self._tar.addfile(info)
        self._written.add(path)

    def add(self, entry: Entry) -> None:
        self.directory(posixpath.dirname(entry.dest))
        if entry.host is None:
            self.directory(entry.dest, 0o755 if self._chmod is None else self._chmod)
        elif entry.archive:
            self._unpack(entry.host, entry.dest)
        else:
            info = self._own(self._tar.gettarinfo(str(entry.host), entry.dest.lstrip("/")),
                             copied=True)
            if self._chmod is not None and not info.issym():
                info.mode = self._chmod
            if info.isreg():
                with open(entry.host, "rb") as f:
                    self._tar.addfile(info, f)
            else:
                self._tar.addfile(info)
            self._written.add(entry.dest)

    def _unpack(self, archive: Path, dest: str) -> None:
        self.directory(dest)
        with tarfile.open(archive, "r:*") as source:
            for member in source:
                name = posixpath.normpath(member.name.lstrip("/"))
                if name == ".." or name.startswith("../"):
                    raise InvalidArgument(f"ADD failed: {member.name!r} is outside of {dest!r}")
                target = posixpath.join(dest, name)
                self.directory(posixpath.dirname(target))
                member.name = target.lstrip("/")
                if member.islnk():
                    member.linkname = posixpath.join(dest, member.linkname).lstrip("/")
                if self._owner not in (None, Owner()):   # an archive's owners stay
                    self._own(member)
                stream = source.extractfile(member) if member.isreg() else None
                self._tar.addfile(member, stream)
                self._written.add(target)
