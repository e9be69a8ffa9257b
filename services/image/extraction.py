"""A layer tar's entries written into the layer's own directory, never
anywhere else.

An entry's name (and a hard link's target) is cleaned as Docker cleans it, a
leading / meaning the layer root, and refused when `..` leaves the layer.
Its parent is then reached from the layer root one component at a time with
directory descriptors opened O_NOFOLLOW, missing ones made there, and a
symlink on the way is refused rather than followed (Docker resolves it in a
chroot of the layer; no tar made from a file system needs it). The entry is
made relative to its parent's descriptor, so nothing is created, linked,
removed or marked outside the layer whatever the tar holds. OCI whiteouts
become overlayfs ones.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass

from services.common.errors import BerthError, Internal, InvalidArgument
from services.common.whiteouts import OPAQUE_MARKER, WHITEOUT_PREFIX, make_opaque, make_whiteout

XATTR_PAX_PREFIX = "SCHILY.xattr."
COPY_SIZE = 1 << 20
IMPLIED_DIR_MODE = 0o755  # parents a tar does not list, as Docker creates them
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NODE_TYPES = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
               tarfile.FIFOTYPE: stat.S_IFIFO}
# Failures of the host rather than of the tar.
_HOST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EMFILE,
                errno.ENFILE, errno.EROFS}


def _invalid(text: str) -> InvalidArgument:
    return InvalidArgument(f"invalid layer: {text}")


def _relative_parts(name: str, shown: str) -> list[str]:
    """`name` as components below the layer root: cleaned like Go's
    filepath.Clean, a leading `/` meaning the root; refused when it leaves it."""
    cleaned = posixpath.normpath(name).lstrip("/")
    if cleaned == ".." or cleaned.startswith("../"):
        raise _invalid(f"{shown} leads outside the layer")
    return [] if cleaned in ("", ".") else cleaned.split("/")


@dataclass
class _Dir:
    """A directory of the layer held open, and the components leading to it."""

    fd: int
    parts: list[str]


class LayerWriter:
    """Writes the entries of one layer tar below `root` (an empty directory).
    The parent of the last entry stays open for the next one (entries of a
    directory come together): removals only ever touch its children, so it
    stays the directory its components name."""

    def __init__(self, root: str) -> None:
        self.root_fd = os.open(root, _OPEN_DIR)
        self.size = 0
        self._parent = _Dir(os.dup(self.root_fd), [])
        self._dir_times: list[tuple[list[str], int]] = []

    def close(self) -> None:
        os.close(self._parent.fd)
        os.close(self.root_fd)

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Write one entry; errors name the entry, never a host path."""
        try:
            self._add(tar, member)
        except BerthError:
            raise
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno in _HOST_ERRNOS:
                raise Internal(f"failed to unpack a layer: {reason}") from exc
            raise _invalid(f'entry "{member.name}": {reason}') from exc
        except (ValueError, OverflowError) as exc:  # a NUL in a name, ids out of range
            raise _invalid(f'entry "{member.name}": {exc}') from exc

    def finish(self) -> None:
        """Set directories' times last, as entries added below changed them."""
        for parts, mtime in self._dir_times:
            try:
                fd = self._open_dir(parts[:-1], "a directory", create=False)
            except (InvalidArgument, FileNotFoundError):
                continue  # removed or replaced by a later entry
            try:
                info = _lstat(fd, parts[-1])
                if info and stat.S_ISDIR(info.st_mode):
                    os.utime(parts[-1], ns=(mtime, mtime), dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)

    def _add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        shown = f'entry "{member.name}"'
        parts = _relative_parts(member.name, shown)
        if not parts:
            return  # the root itself keeps the layer dir's attributes
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX) and base != OPAQUE_MARKER:
            return  # other AUFS metadata (.wh..wh.plnk, ...)
        parent = self._parent_dir(parts[:-1], shown)
        if base == OPAQUE_MARKER:
            make_opaque(parent.fd)
        elif base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base.removeprefix(WHITEOUT_PREFIX), member.name)
        else:
            self._entry(tar, member, parent, base)

    def _parent_dir(self, parts: list[str], shown: str) -> _Dir:
        """The directory at `parts`, made where missing, kept open as the
        current parent."""
        if parts != self._parent.parts:
            fd = self._open_dir(parts, shown, create=True)
            os.close(self._parent.fd)
            self._parent = _Dir(fd, parts)
        return self._parent

    def _open_dir(self, parts: list[str], shown: str, create: bool) -> int:
        """A new descriptor of the directory at `parts`, reached from the root
        without following any symlink; missing directories are made when
        `create`. `shown` names what is being written, in errors."""
        fd = os.dup(self.root_fd)
        try:
            for depth, part in enumerate(parts):
                child = _step(fd, part, parts[:depth + 1], shown, create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _whiteout(self, parent: _Dir, name: str, shown: str) -> None:
        if name in ("", ".", ".."):
            raise _invalid(f'whiteout "{shown}" names no entry of its directory')
        _remove(parent.fd, name)
        make_whiteout(name, dir_fd=parent.fd)

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: _Dir,
               base: str) -> None:
        existing = _lstat(parent.fd, base)
        if existing and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(parent.fd, base)
            existing = None
        if member.isdir():
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=parent.fd)
            self._dir_times.append(([*parent.parts, base], _mtime_ns(member)))
        elif member.isreg():
            self._write_file(tar, member, parent.fd, base)
            self.size += member.size
        elif member.issym():
            # Stored as is, never followed here: in the container even an
            # absolute or climbing target resolves inside its root.
            os.symlink(member.linkname, base, dir_fd=parent.fd)
            self.size += len(member.linkname)  # Docker counts a symlink's own size
        elif member.islnk():
            self._hard_link(member, parent.fd, base)
        elif member.type in _NODE_TYPES:
            os.mknod(base, _NODE_TYPES[member.type] | 0o600,
                     os.makedev(member.devmajor, member.devminor), dir_fd=parent.fd)
        else:
            raise _invalid(f'entry "{member.name}" has an unsupported type {member.type!r}')
        _set_attributes(member, parent.fd, base)

    @staticmethod
    def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, dir_fd: int,
                    base: str) -> None:
        source = tar.extractfile(member)
        with os.fdopen(os.open(base, _CREATE_FILE, 0o600, dir_fd=dir_fd), "wb") as target:
            if source is not None:
                shutil.copyfileobj(source, target, COPY_SIZE)

    def _hard_link(self, member: tarfile.TarInfo, dir_fd: int, base: str) -> None:
        """Link an entry already in this layer (an absolute target counts from
        the layer root, as in Docker); never a file elsewhere."""
        shown = f'hard link "{member.name}" -> "{member.linkname}"'
        target = _relative_parts(member.linkname, shown)
        if not target:
            raise _invalid(f"{shown} links the layer root")
        try:
            source_fd = self._open_dir(target[:-1], shown, create=False)
            try:
                os.link(target[-1], base, src_dir_fd=source_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
            finally:
                os.close(source_fd)
        except FileNotFoundError as exc:
            raise _invalid(f"{shown}: no such entry in the layer") from exc


def _step(fd: int, part: str, walked: list[str], shown: str, create: bool) -> int:
    """A new descriptor of the directory `part` in the directory `fd`."""
    try:
        return os.open(part, _OPEN_DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        os.mkdir(part, IMPLIED_DIR_MODE, dir_fd=fd)
        child = os.open(part, _OPEN_DIR, dir_fd=fd)
        os.fchmod(child, IMPLIED_DIR_MODE)  # whatever the umask
        return child
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        where = "/".join(walked)
        if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
            raise _invalid(f'{shown} goes through the symlink "{where}", '
                           f"which could lead outside the layer") from exc
        raise _invalid(f'{shown}: "{where}" is not a directory') from exc


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str) -> None:
    """Remove what is at `name` in `dir_fd`, never following a symlink."""
    info = _lstat(dir_fd, name)
    if info is None:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(member.mtime * 1_000_000_000)


def _set_attributes(member: tarfile.TarInfo, dir_fd: int, base: str) -> None:
    """Owner, mode, times and xattrs of the entry just made at `base`; the
    entry is ours, so only a symlink needs care not to be followed."""
    os.chown(base, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
    if not member.issym():
        os.chmod(base, member.mode & 0o7777, dir_fd=dir_fd)
    if not member.isdir():
        mtime = _mtime_ns(member)
        os.utime(base, ns=(mtime, mtime), dir_fd=dir_fd, follow_symlinks=False)
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR_PAX_PREFIX):
            # setxattr has no dir_fd; the descriptor's /proc link is the same directory.
            os.setxattr(f"/proc/self/fd/{dir_fd}/{base}", key.removeprefix(XATTR_PAX_PREFIX),
                        value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
