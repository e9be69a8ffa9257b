"""COPY and ADD: which files go where, their digest for the cache, and the
layer tar that puts them in the image."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from services.builder.rootfs import RootfsView, resolve_in_scope
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


@dataclass
class CopyPlan:
    entries: list[Entry] = field(default_factory=list)
    digest: str = ""
    kind: str = "file"             # file, dir, multi: how Docker names it in history


class ContentDigests:
    """sha256 of regular files for COPY's cache key. A context's files are
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


class SourceTree:
    """Where COPY reads from: the context directory or another image."""

    def __init__(self, root: Path | None = None, view: RootfsView | None = None,
                 digests: ContentDigests | None = None) -> None:
        self.root = root
        self.view = view
        self.digests = digests or ContentDigests()

    def host_path(self, rel: str) -> Path | None:
        """Where `rel` is on the host, symlinks followed without leaving the tree."""
        if self.view is not None:
            return self.view.lookup(rel)
        return self._in_context(resolve_in_scope(rel, self._in_context))

    def _in_context(self, parts: list[str]) -> Path | None:
        assert self.root is not None
        path = self.root.joinpath(*parts)
        return path if os.path.lexists(path) else None

    def walk(self, rel: str) -> Iterator[tuple[str, Path]]:
        """Every path below directory `rel` (relative name, host path), sorted."""
        if self.view is not None:
            yield from self.view.tree(rel).items()
            return
        top = self.host_path(rel)
        assert top is not None
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                host = Path(dirpath) / name
                yield os.path.relpath(host, top), host

    def all_paths(self) -> list[str]:
        return [name for name, _ in self.walk("")]


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


def resolve_sources(tree: SourceTree, sources: list[str], instruction: str
                    ) -> list[tuple[str, Path]]:
    """Each source as (relative name, host path), wildcards expanded."""
    found: list[tuple[str, Path]] = []
    for src in sources:
        rel = clean_source(src, instruction)
        if _WILDCARD & set(rel):
            matches = [(p, tree.host_path(p)) for p in tree.all_paths() if _matches(rel, p)]
            found.extend((p, h) for p, h in matches if h is not None)
            continue
        host = tree.host_path(rel)
        if host is None:
            raise InvalidArgument(
                f"{instruction} failed: file not found in build context or excluded by "
                f".dockerignore: stat {src.lstrip('/')}: file does not exist")
        found.append((rel, host))
    if not found:
        raise InvalidArgument(f"{instruction} failed: no source files were specified")
    return found


def is_archive(path: Path) -> bool:
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


def plan_copy(tree: SourceTree, sources: list[str], dest: str, workdir: str,
              parent: RootfsView, instruction: str) -> CopyPlan:
    """Where every source lands, following Docker's destination rules."""
    if not posixpath.isabs(dest):
        dest = posixpath.join(workdir or "/", dest)
    dest_is_dir = dest.endswith("/") or dest.endswith("/.")
    resolved = resolve_sources(tree, sources, instruction)
    if len(resolved) > 1 and not dest_is_dir:
        raise InvalidArgument(
            f"When using {instruction} with more than one source file, the destination "
            "must be a directory and end with a /")
    dest = posixpath.normpath(dest)
    plan = CopyPlan(kind="multi" if len(resolved) > 1 else "file")
    for rel, host in resolved:
        if host.is_dir() and not host.is_symlink():
            if len(resolved) == 1:
                plan.kind = "dir"
            plan.entries.append(Entry(dest=dest, host=None))
            for name, child in tree.walk(rel):
                plan.entries.append(Entry(dest=posixpath.join(dest, name), host=child))
        elif instruction == "ADD" and is_archive(host):
            plan.entries.append(Entry(dest=dest, host=host, archive=True))
        else:
            into_dir = dest_is_dir or parent.is_dir(dest)
            target = posixpath.join(dest, posixpath.basename(rel)) if into_dir else dest
            plan.entries.append(Entry(dest=target, host=host))
    plan.digest = _digest(plan.entries, tree.digests)
    return plan


def _digest(entries: list[Entry], digests: ContentDigests) -> str:
    """Content and metadata (not mtimes) of everything copied."""
    infos = [None if e.host is None else os.lstat(e.host) for e in entries]
    regular = [e.host for e, info in zip(entries, infos, strict=True)
               if e.host is not None and info is not None and stat.S_ISREG(info.st_mode)]
    contents = dict(zip(regular, digests.of(regular), strict=True))
    digest = hashlib.sha256()
    for entry, info in zip(entries, infos, strict=True):
        digest.update(entry.dest.encode() + b"\0")
        if info is None:
            continue
        digest.update(f"{info.st_mode:o} {info.st_uid} {info.st_gid} {info.st_size}\0".encode())
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.readlink(entry.host).encode())
        elif entry.host in contents:
            digest.update(contents[entry.host])
    return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _ids(text: str) -> dict[str, tuple[int, int]]:
    """name -> (id, primary gid) from /etc/passwd or /etc/group text."""
    table = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            table[fields[0]] = (int(fields[2]), int(fields[3]) if fields[3].isdigit() else 0)
        elif len(fields) >= 3 and fields[2].isdigit():
            table[fields[0]] = (int(fields[2]), int(fields[2]))
    return table


def parse_chown(spec: str, image: RootfsView) -> Owner:
    """--chown=user[:group], names looked up in the image's passwd/group."""
    if not spec:
        return Owner()
    user, _, group = spec.partition(":")
    users = _ids(image.read_text("/etc/passwd"))
    if user.isdigit():
        uid, gid = int(user), int(user)
    elif user in users:
        uid, gid = users[user]
    else:
        raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: "
                              f"can't find uid for user {user}: no such user: {user}")
    if group:
        groups = _ids(image.read_text("/etc/group"))
        if group.isdigit():
            gid = int(group)
        elif group in groups:
            gid = groups[group][0]
        else:
            raise InvalidArgument(
                f"unable to convert uid/gid chown string to host mapping: "
                f"can't find gid for group {group}: no such group: {group}")
    return Owner(uid, gid)


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
    """Writes an uncompressed layer tar: missing parent dirs, then entries."""

    def __init__(self, tar: tarfile.TarFile, parent: RootfsView, owner: Owner,
                 chmod: int | None = None) -> None:
        self._tar = tar
        self._parent = parent
        self._owner = owner
        self._chmod = chmod
        self._written: set[str] = set()

    def _own(self, info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = self._owner.uid, self._owner.gid
        info.uname = info.gname = ""
        return info

    def directory(self, path: str, mode: int = 0o755) -> None:
        """Add `path` and its missing parents, 0755 (existing ones keep their
        metadata)."""
        path = posixpath.normpath(path)
        if path == "/" or path in self._written:
            return
        self.directory(posixpath.dirname(path))
        if self._parent.exists(path):
            return
        info = self._own(tarfile.TarInfo(path.lstrip("/")))
        info.type, info.mode = tarfile.DIRTYPE, mode
        self._tar.addfile(info)
        self._written.add(path)

    def add(self, entry: Entry) -> None:
        self.directory(posixpath.dirname(entry.dest))
        if entry.host is None:
            self.directory(entry.dest, 0o755 if self._chmod is None else self._chmod)
        elif entry.archive:
            self._unpack(entry.host, entry.dest)
        else:
            info = self._own(self._tar.gettarinfo(str(entry.host), entry.dest.lstrip("/")))
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
                if self._owner != Owner():
                    self._own(member)
                stream = source.extractfile(member) if member.isreg() else None
                self._tar.addfile(member, stream)
                self._written.add(target)
