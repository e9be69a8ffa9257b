"""docker cp: stat, read and write paths of a container's file system.

Every path is resolved like a chroot (securejoin semantics): `..` stops at
the root and symbolic links, absolute or relative, are followed inside the
root, so nothing outside the container's file system is read or written.
Writes extract into a temporary directory next to the destination (same
file system) and only then move into place, so a bad archive leaves nothing
behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common import gomode
from services.common.errors import InvalidArgument, NotFound
from services.common.scoped import secure_join

# tarfile's stream reads and file writes: its defaults (10 and 16 KiB) cost
# many calls and copies; larger buffers measured no better.
EXTRACT_BUFFER = 1 << 16


def _follows_last(path: str) -> bool:
    """Docker follows a trailing symlink only when the path ends in / or /."""
    return path.endswith("/") or path.endswith("/.")




def go_time(seconds_ns: int) -> str:
    """A timestamp as Go's time.Time marshals it (RFC 3339, nanoseconds)."""
    whole, nanos = divmod(seconds_ns, 1_000_000_000)
    base = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{base}{fraction}Z"


@dataclass
class PathInfo:
    name: str
    size: int
    mode: int
    mtime: str
    link_target: str


def _absolute(path: str) -> str:
    """The path as an absolute container path, keeping a trailing / or /."""
    if "\0" in path:
        raise InvalidArgument(f"invalid path {path!r}: it contains a NUL character")
    absolute = os.path.normpath("/" + path)
    if absolute.startswith("//"):
        absolute = absolute[1:]
    if path.endswith("/."):
        return absolute.rstrip("/") + "/."
    if path.endswith("/") and absolute != "/":
        return absolute + "/"
    return absolute


def _base_name(absolute: str) -> str:
    stripped = absolute.rstrip("/")
    return os.path.basename(stripped) if stripped else "/"


def _host_path(root: str, path: str, follow_last: bool) -> str:
    return secure_join(root, path, follow_last=follow_last or _follows_last(path))


def container_path(root: str, host_path: str) -> str:
    """The container path of a host path under `root`."""
    relative = os.path.relpath(host_path, root)
    return "/" if relative == "." else "/" + relative


def stat_path(root: str, path: str, not_found: str) -> PathInfo:
    """Docker's container path stat; `not_found` is the NotFound message."""
    absolute = _absolute(path)
    host_path = _host_path(root, absolute, follow_last=False)
    try:
        # The root itself may be /proc/<pid>/root, a symlink to follow.
        info = os.stat(host_path) if host_path == root else os.lstat(host_path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(not_found) from exc
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror}") from exc
    link_target = ""
    if stat.S_ISLNK(info.st_mode):
        link_target = container_path(root, secure_join(root, absolute))
    return PathInfo(name=_base_name(absolute), size=info.st_size,
                    mode=gomode.from_st_mode(info.st_mode), mtime=go_time(info.st_mtime_ns),
                    link_target=link_target)


def _anonymous_owner(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uname = member.gname = ""
    return member


def write_tar(root: str, path: str, out: Callable[[bytes], object]) -> None:
    """Tar of `path` (Docker's TarResourceRebase), entries named after its base."""
    absolute = _absolute(path)
    host_path = _host_path(root, absolute, follow_last=False)
    arcname = "." if absolute.endswith("/.") else _base_name(absolute)
    if host_path == root:
        host_path = os.path.join(root, ".")   # follow a /proc/<pid>/root root
    writer = TarOutput(out)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(host_path, arcname=arcname, filter=_anonymous_owner)


def write_tree_tar(directory: str, out: Callable[[bytes], object]) -> None:
    """Tar of everything under `directory` with names relative to it."""
    writer = TarOutput(out)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, entry), arcname=entry, filter=_anonymous_owner)


class TarOutput:
    """The minimal file object tarfile needs in stream mode."""

    def __init__(self, out: Callable[[bytes], object]) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        self._out(bytes(data))
        return len(data)


@dataclass
class ExtractOptions:
    no_overwrite_dir_non_dir: bool = False
    owner: tuple[int, int] | None = None   # chown every entry; None keeps the tar's


def extraction_dir(root: str, path: str, not_found: str) -> str:
    """The host path of the directory an archive is put into (the last
    element is followed when it is a symlink, as Docker does)."""
    absolute = _absolute(path)
    host_dir = secure_join(root, absolute)
    try:
        info = os.stat(host_dir)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(not_found) from exc
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidArgument("extraction point is not a directory")
    return host_dir


def _entry_filter(options: ExtractOptions) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo]:
    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        # tar_filter refuses absolute names and entries that would land
        # outside the destination (through `..` or an extracted symlink);
        # modes and owners are kept as docker cp does.
        try:
            checked = tarfile.tar_filter(member, dest)
        except tarfile.FilterError as exc:
            raise InvalidArgument(f"invalid archive entry: {exc}") from exc
        if member.islnk():
            _check_hardlink(member, dest)
        uid, gid = options.owner if options.owner else (member.uid, member.gid)
        return checked.replace(mode=member.mode, uid=uid, gid=gid, uname="", gname="",
                               deep=False)
    return check


def _check_hardlink(member: tarfile.TarInfo, dest: str) -> None:
    target = os.path.realpath(os.path.join(dest, member.linkname.lstrip("/")))
    if os.path.commonpath([target, os.path.realpath(dest)]) != os.path.realpath(dest):
        raise InvalidArgument(f"invalid hardlink {member.name!r} -> {member.linkname!r}")


def untar_into(host_dir: str, container_dir: str, read: Callable[[int], bytes],
               options: ExtractOptions) -> None:
    """Extract a tar stream into `host_dir`: first into a temporary directory
    beside the files, then move the entries into place."""
    staging = tempfile.mkdtemp(prefix=".berth-cp-", dir=host_dir)
    try:
        try:
            with tarfile.open(fileobj=_Reader(read), mode="r|*", bufsize=EXTRACT_BUFFER,
                              copybufsize=EXTRACT_BUFFER) as tar:
                tar.extractall(staging, numeric_owner=True, filter=_entry_filter(options))
        except (tarfile.TarError, EOFError, UnicodeError) as exc:
            raise InvalidArgument(f"invalid tar archive: {exc}") from exc
        except OSError as exc:
            raise InvalidArgument(f"cannot extract archive: {exc}") from exc
        if options.no_overwrite_dir_non_dir:
            _check_overwrites(staging, host_dir, container_dir)
        _merge(staging, host_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Reader:
    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read


def _is_dir(path: str) -> bool | None:
    """True/False for an existing dir/non-dir (symlinks not followed), None if absent."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def _check_overwrites(source: str, dest: str, container_dir: str) -> None:
    for name in os.listdir(source):
        source_is_dir = bool(_is_dir(os.path.join(source, name)))
        dest_is_dir = _is_dir(os.path.join(dest, name))
        shown = os.path.join(container_dir, name)
        if dest_is_dir is True and not source_is_dir:
            raise InvalidArgument(
                f"cannot overwrite directory {shown!r} with non-directory {shown!r}")
        if dest_is_dir is False and source_is_dir:
            raise InvalidArgument(
                f"cannot overwrite non-directory {shown!r} with directory {shown!r}")
        if source_is_dir and dest_is_dir:
            _check_overwrites(os.path.join(source, name), os.path.join(dest, name), shown)


def _merge(source: str, dest: str) -> None:
    for name in os.listdir(source):
        source_path, dest_path = os.path.join(source, name), os.path.join(dest, name)
        source_is_dir = bool(_is_dir(source_path))
        dest_is_dir = _is_dir(dest_path)
        if source_is_dir and dest_is_dir:
            _merge(source_path, dest_path)
            _copy_metadata(source_path, dest_path)
            continue
        if dest_is_dir:
            shutil.rmtree(dest_path)
        elif dest_is_dir is False:
            os.unlink(dest_path)
        os.rename(source_path, dest_path)


def _copy_metadata(source: str, dest: str) -> None:
    info = os.lstat(source)
    os.chown(dest, info.st_uid, info.st_gid)
    os.chmod(dest, stat.S_IMODE(info.st_mode))
    os.utime(dest, ns=(info.st_atime_ns, info.st_mtime_ns))

