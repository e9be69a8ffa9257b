"""A container's Binds, Mounts, Tmpfs, Volumes and VolumesFrom as OCI mounts.

The container service calls three functions:

- `plan_mounts` at create: validates every mount request with Docker's
  messages, then takes volume leases (holder = container ID) and returns a
  JSON-serialisable `MountPlan` (OCI mounts plus Docker's inspect `Mounts`).
  If anything fails, the leases it took are released again.
- `copy_up` at every start, once the rootfs is mounted: fills empty volumes
  from the image's content at their destination (Docker's copy-on-mount) and
  creates missing host directories of `-v /host:/path` binds.
- `release_mounts` at remove: drops the container's leases, removing its
  anonymous volumes when asked (`docker rm -v`, AutoRemove).

User mounts replace the runtime's default mount at the same destination
(e.g. `--tmpfs /dev/shm`); the OCI list is ordered so parents mount first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from berth.container.v1 import container_pb2
from berth.volume.v1 import volume_pb2
from services.common.errors import (
    BerthError,
    Internal,
    InvalidArgument,
    NotFound,
)
from services.common.peers import PeerClient

RW_MODES = {"rw", "ro"}
LABEL_MODES = {"z", "Z"}
PROPAGATION_MODES = {"shared", "rshared", "slave", "rslave", "private", "rprivate"}
COPY_MODES = {"nocopy"}
CONSISTENCY_MODES = {"consistent", "cached", "delegated"}
MODE_KINDS = {**dict.fromkeys(RW_MODES, "rw"), **dict.fromkeys(LABEL_MODES, "label"),
              **dict.fromkeys(PROPAGATION_MODES, "propagation"),
              **dict.fromkeys(COPY_MODES, "copy"),
              **dict.fromkeys(CONSISTENCY_MODES, "consistency")}
DEFAULT_PROPAGATION = "rprivate"
TMPFS_DEFAULTS = ["noexec", "nosuid", "nodev", "rprivate"]
# Flags whose later occurrence cancels the earlier (mount(8) semantics).
TMPFS_FLAG_PAIRS = {"exec": "noexec", "suid": "nosuid", "dev": "nodev", "rw": "ro",
                    "atime": "noatime", "diratime": "nodiratime"}

ResolveMounts = Callable[[str], Awaitable[list[container_pb2.MountPoint]]]


@dataclass
class MountPlan:
    """What a container mounts; stored with the container as JSON."""

    oci_mounts: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)  # Docker's inspect Mounts
    # Volumes to fill from the image when empty: {"source": host, "destination": path}.
    copy_up: list[dict[str, str]] = field(default_factory=list)
    bind_dirs: list[str] = field(default_factory=list)  # -v host paths made at start

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MountPlan:
        return cls(**json.loads(text)) if text else cls()

    def mount_points(self) -> list[container_pb2.MountPoint]:
        return [container_pb2.MountPoint(
            type=m["Type"], name=m["Name"], source=m["Source"], destination=m["Destination"],
            driver=m["Driver"], mode=m["Mode"], rw=m["RW"], propagation=m["Propagation"])
            for m in self.mounts]


@dataclass
class Request:
    """One mount the user asked for, before any volume exists."""

    type: str                       # volume, bind, tmpfs
    destination: str
    source: str = ""                # volume name or host path
    read_only: bool = False
    mode: str = ""                  # Docker's inspect Mode
    propagation: str = ""
    copy: bool = True
    driver: str = ""
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    subpath: str = ""
    tmpfs_options: list[str] = field(default_factory=list)
    create_source: bool = False     # -v bind: a missing host path becomes a directory
    recursive: bool = True
    read_only_non_recursive: bool = False   # asked: submounts keep their own flags
    read_only_force_recursive: bool = False  # asked: submounts read-only too, or fail
    read_only_recursive: bool = False  # planned: submounts read-only too (runc's "rro")
    in_inspect: bool = True         # --tmpfs mounts are not in Docker's Mounts


# Validation with Docker's messages

def _mount_error(kind: str, message: str) -> InvalidArgument:
    return InvalidArgument(f'invalid mount config for type "{kind}": {message}')


def valid_mode(mode: str) -> bool:
    """Docker's ValidateMountMode: known words, at most one of each kind."""
    if not mode:
        return True
    kinds = [MODE_KINDS.get(word) for word in mode.split(",")]
    return None not in kinds and len(kinds) == len(set(kinds))


def _check_target(kind: str, target: str) -> None:
    if not target:
        raise _mount_error(kind, "field Target must not be empty")
    if posixpath.normpath(target) == "/" or target == "/":
        raise _mount_error(kind, "invalid specification: destination can't be '/'")
    if not posixpath.isabs(target):
        raise _mount_error(kind, f"invalid mount path: '{target}' mount path must be absolute")


def parse_bind(raw: str, volume_driver: str = "") -> Request:
    """One `-v` / HostConfig.Binds entry, as Docker's linux parser reads it."""
    parts = raw.split(":")
    if not parts[0] or len(parts) > 3:
        raise InvalidArgument(f"invalid volume specification: '{raw}'")
    if len(parts) == 1:
        source, target, mode = "", parts[0], ""
    elif len(parts) == 2:
        if valid_mode(parts[1]):
            raise InvalidArgument(f"invalid volume specification: '{raw}'")
        source, target, mode = parts[0], parts[1], ""
    else:
        source, target, mode = parts
    if not valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    words = mode.split(",") if mode else []
    kind = "bind" if posixpath.isabs(source) else "volume"
    propagation = next((w for w in words if w in PROPAGATION_MODES), "")
    request = Request(
        type=kind, destination=target, source=source, read_only="ro" in words, mode=mode,
        copy="nocopy" not in words, create_source=True,
        driver=volume_driver if kind == "volume" else "")
    if kind == "bind":
        request.propagation = propagation or DEFAULT_PROPAGATION
    elif not mode and source:
        request.mode = "z"
    try:
        _check_target(kind, target)
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid volume specification: '{raw}': {exc.message}") from exc
    return request


def parse_mount(mount: container_pb2.Mount) -> Request:
    """One `--mount` / HostConfig.Mounts entry, validated as Docker does."""
    kind = mount.type
    if kind not in ("bind", "volume", "tmpfs"):
        raise _mount_error(kind, "mount type unknown")
    _check_target(kind, mount.target)
    request = Request(type=kind, destination=mount.target, source=mount.source,
                      read_only=mount.read_only)
    if kind == "bind":
        _check_bind_mount(mount, request)
    elif kind == "volume":
        _check_volume_mount(mount, request)
    else:
        _check_tmpfs_mount(mount, request)
    return request


def _check_bind_mount(mount: container_pb2.Mount, request: Request) -> None:
    if not mount.source:
        raise _mount_error("bind", "field Source must not be empty")
    propagation = mount.bind_options.propagation
    if propagation and propagation not in PROPAGATION_MODES:
        raise _mount_error("bind", f"invalid propagation mode: {propagation}")
    if mount.HasField("volume_options"):
        raise _mount_error("bind", "field VolumeOptions must not be specified")
    if not posixpath.isabs(mount.source):
        raise _mount_error("bind", f"invalid mount path: '{mount.source}' mount path must be "
                                   "absolute")
    if not os.path.lexists(mount.source) and not mount.bind_options.create_mountpoint:
        raise _mount_error("bind", f"bind source path does not exist: {mount.source}")
    request.propagation = propagation or DEFAULT_PROPAGATION
    request.recursive = not mount.bind_options.non_recursive
    request.create_source = mount.bind_options.create_mountpoint
    _check_read_only_recursion(mount, request)


def _check_read_only_recursion(mount: container_pb2.Mount, request: Request) -> None:
    """ReadOnlyNonRecursive and ReadOnlyForceRecursive, refused in dockerd's
    words where they conflict (dockerd finds these at start; here the create
    fails). Forcing also needs an rprivate, recursive bind, as the docker
    CLI and the CRI ask."""
    options = mount.bind_options
    if not mount.read_only and options.read_only_non_recursive:
        raise InvalidArgument("mount options conflict: !ReadOnly && "
                              "BindOptions.ReadOnlyNonRecursive")
    if not mount.read_only and options.read_only_force_recursive:
        raise InvalidArgument("mount options conflict: !ReadOnly && "
                              "BindOptions.ReadOnlyForceRecursive")
    if options.read_only_non_recursive and options.read_only_force_recursive:
        raise InvalidArgument("mount options conflict: ReadOnlyNonRecursive && "
                              "BindOptions.ReadOnlyForceRecursive")
    if options.read_only_force_recursive and (request.propagation != "rprivate"
                                              or not request.recursive):
        raise _mount_error("bind", "option ReadOnlyForceRecursive requires "
                                   "BindOptions.Propagation to be 'rprivate' and a "
                                   "recursive bind")
    request.read_only_non_recursive = options.read_only_non_recursive
    request.read_only_force_recursive = options.read_only_force_recursive


def _check_volume_mount(mount: container_pb2.Mount, request: Request) -> None:
    if mount.HasField("bind_options"):
        raise _mount_error("volume", "field BindOptions must not be specified")
    options = mount.volume_options
    anonymous = not mount.source
    if options.subpath:
        if anonymous:
            raise _mount_error("volume", "must not set Subpath when using anonymous volumes")
        clean = posixpath.normpath(options.subpath)
        if posixpath.isabs(clean) or clean == ".." or clean.startswith("../"):
            raise _mount_error("volume", "subpath must be a relative path within the volume")
    if mount.read_only and anonymous:
        raise _mount_error("volume", "must not set ReadOnly mode when using anonymous volumes")
    request.mode = "z"
    request.copy = not options.no_copy
    request.labels = dict(options.labels)
    request.driver = options.driver_config.name
    request.driver_opts = dict(options.driver_config.options)
    request.subpath = options.subpath


def _check_tmpfs_mount(mount: container_pb2.Mount, request: Request) -> None:
    if mount.HasField("bind_options"):
        raise _mount_error("tmpfs", "field BindOptions must not be specified")
    if mount.source:
        raise _mount_error("tmpfs", "field Source must not be specified")
    size = mount.tmpfs_options.size_bytes
    if size < 0:
        raise _mount_error("tmpfs", "invalid tmpfs size")
    options: list[str] = []
    if size:
        options.append(f"size={_tmpfs_size(size)}")
    if mount.tmpfs_options.mode:
        options.append(f"mode={mount.tmpfs_options.mode:o}")
    if mount.read_only:
        options.append("ro")
    request.tmpfs_options = options


def _tmpfs_size(size: int) -> str:
    """Docker's rendering: the largest of k, m, g that divides evenly."""
    suffix = ""
    for unit in ("k", "m", "g"):
        if size % 1024:
            break
        size //= 1024
        suffix = unit
    return f"{size}{suffix}"


def parse_tmpfs(destination: str, options: str) -> Request:
    """One `--tmpfs` / HostConfig.Tmpfs entry."""
    _check_target("tmpfs", destination)
    words = [w for w in options.split(",") if w]
    return Request(type="tmpfs", destination=destination, tmpfs_options=words,
                   read_only="ro" in words, in_inspect=False)


def parse_volumes_from(spec: str) -> tuple[str, str]:
    """`container[:ro|:rw]` into (container, mode)."""
    name, _, mode = spec.partition(":")
    if not name or ":" in mode or not valid_mode(mode):
        raise InvalidArgument(f"invalid mode: {mode}")
    return name, mode


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """Docker's MergeTmpfsOptions: later options win over earlier ones."""
    merged: dict[str, str] = {}
    opposite = {**TMPFS_FLAG_PAIRS, **{v: k for k, v in TMPFS_FLAG_PAIRS.items()}}
    for option in options:
        key = option.split("=", 1)[0] if "=" in option else option
        merged.pop(opposite.get(key, ""), None)
        merged.pop(key, None)
        merged[key] = option
    return list(merged.values())


# Planning

def _explicit(host_config: container_pb2.HostConfig) -> list[Request]:
    """Every bind, mount and tmpfs asked for, validated, duplicates refused."""
    requests = [parse_bind(raw, host_config.volume_driver) for raw in host_config.binds]
    requests += [parse_mount(m) for m in host_config.mounts]
    requests += [parse_tmpfs(path, opts) for path, opts in sorted(host_config.tmpfs.items())]
    seen: set[str] = set()
    for request in requests:
        destination = posixpath.normpath(request.destination)
        if destination in seen:
            raise InvalidArgument(f"Duplicate mount point: {destination}")
        seen.add(destination)
    return requests


def _anonymous_destinations(paths: list[str]) -> list[str]:
    """Config.Volumes and image VOLUMEs, validated and normalised."""
    destinations: list[str] = []
    for path in paths:
        destination = posixpath.normpath(path)
        if not posixpath.isabs(destination):
            raise _mount_error("volume", f"invalid mount path: '{path}' mount path must be "
                                         "absolute")
        if destination == "/":
            raise _mount_error("volume", "invalid specification: destination can't be '/'")
        destinations.append(destination)
    return destinations


def _anonymous(destinations: list[str], taken: set[str], driver: str) -> list[Request]:
    """A new volume at each destination where nothing else mounts."""
    requests: list[Request] = []
    for destination in destinations:
        if destination not in taken:
            taken.add(destination)
            requests.append(Request(type="volume", destination=destination, driver=driver))
    return requests


async def _inherited(host_config: container_pb2.HostConfig, taken: set[str],
                     resolve: ResolveMounts) -> list[Request]:
    """--volumes-from: the other containers' volumes and binds, where not overridden."""
    requests: list[Request] = []
    for spec in host_config.volumes_from:
        name, mode = parse_volumes_from(spec)
        try:
            points = await resolve(name)
        except NotFound as exc:  # Docker answers 400 here, not 404
            raise InvalidArgument(exc.message) from exc
        for point in points:
            destination = posixpath.normpath(point.destination)
            if point.type not in ("volume", "bind") or destination in taken:
                continue
            taken.add(destination)
            read_only = "ro" in mode.split(",") if mode else not point.rw
            requests.append(Request(
                type=point.type, destination=destination, source=point.name or point.source,
                read_only=read_only, mode=mode or point.mode, propagation=point.propagation,
                copy=False))
    return requests


async def _acquire(volumes: PeerClient, container_id: str, request: Request
                   ) -> volume_pb2.AcquireVolumeResponse:
    return await volumes.Acquire(volume_pb2.AcquireVolumeRequest(
        name=request.source, holder=container_id, driver=request.driver,
        driver_opts=request.driver_opts, labels=request.labels,
        anonymous=not request.source, destination=request.destination,
        read_only=request.read_only))


def _subpath_source(root: str, subpath: str) -> str:
    """The subpath inside the volume, refusing links that lead out of it."""
    candidate = os.path.realpath(os.path.join(root, subpath))
    real_root = os.path.realpath(root)
    if os.path.commonpath([candidate, real_root]) != real_root:
        raise _mount_error("volume", "subpath must be a relative path within the volume")
    if not os.path.exists(candidate):
        raise InvalidArgument(f"cannot access path {candidate}: no such file or directory")
    return candidate


def _bind_options(request: Request) -> list[str]:
    """As dockerd writes them: volumes carry no propagation, binds do."""
    options = ["rbind" if request.recursive else "bind"]
    if request.read_only:
        options.append("rro" if request.read_only_recursive else "ro")
    if request.propagation:
        options.append(request.propagation)
    return options


def mount_depth(mount: dict[str, Any]) -> int:
    """Parents before children: Docker sorts by the depth of the destination."""
    return posixpath.normpath(mount["destination"]).count("/")


async def _build(plan: MountPlan, request: Request, volumes: PeerClient, container_id: str) -> None:
    inspect = {"Type": request.type, "Name": "", "Source": request.source,
               "Destination": request.destination, "Driver": "", "Mode": request.mode,
               "RW": not request.read_only, "Propagation": request.propagation}
    if request.type == "tmpfs":
        options = merge_tmpfs_options([*TMPFS_DEFAULTS, *request.tmpfs_options])
        plan.oci_mounts.append({"destination": request.destination, "type": "tmpfs",
                                "source": "tmpfs", "options": options})
        inspect["Source"] = ""
    elif request.type == "bind":
        plan.oci_mounts.append({"destination": request.destination, "type": "bind",
                                "source": request.source, "options": _bind_options(request)})
        if request.create_source:
            plan.bind_dirs.append(request.source)
    else:
        acquired = await _acquire(volumes, container_id, request)
        source = acquired.host_path
        if request.subpath:
            source = _subpath_source(source, request.subpath)
        elif request.copy:
            plan.copy_up.append({"source": source, "destination": request.destination})
        plan.oci_mounts.append({"destination": request.destination, "type": "bind",
                                "source": source, "options": _bind_options(request)})
        inspect.update(Name=acquired.volume.name, Source=acquired.host_path,
                       Driver=acquired.volume.driver)
    if request.in_inspect:
        plan.mounts.append(inspect)


@dataclass
class ReadOnlyRecursion:
    """How read-only mounts treat the mounts below them.
    `binds_non_recursive`: read-only binds stay non-recursive unless forced
    (Docker clients before API 1.44); `unsupported`: why this host cannot
    make a mount read-only recursively, "" when it can."""

    binds_non_recursive: bool = False
    unsupported: str = ""

    def plan(self, request: Request) -> None:
        if not request.read_only or request.type == "tmpfs":
            return
        if request.read_only_force_recursive and self.unsupported:
            raise InvalidArgument(self.unsupported)
        non_recursive = request.read_only_non_recursive or (
            request.type == "bind" and self.binds_non_recursive)
        request.read_only_recursive = not (non_recursive or self.unsupported)


async def plan_mounts(container_id: str, config: container_pb2.ContainerConfig,
                      host_config: container_pb2.HostConfig, image_volumes: list[str],
                      volumes: PeerClient, resolve_container_mounts: ResolveMounts,
                      recursion: ReadOnlyRecursion) -> MountPlan:
    """Validate every mount of a new container, lease its volumes, plan its OCI mounts.

    `volumes` is the volume service's PeerClient; `resolve_container_mounts`
    gives another container's mount points for --volumes-from (raising
    NotFound for an unknown container). A read-only mount is read-only
    recursively as `recursion` says, as dockerd's are. On any failure every
    lease taken here is released and the anonymous volumes made here are
    removed.
    """
    requests = _explicit(host_config)
    taken = {posixpath.normpath(r.destination) for r in requests}
    destinations = _anonymous_destinations([*config.volumes, *image_volumes])
    # Docker's precedence: explicit mounts, then --volumes-from, then anonymous.
    requests += await _inherited(host_config, taken, resolve_container_mounts)
    requests += _anonymous(destinations, taken, host_config.volume_driver)
    for request in requests:
        recursion.plan(request)
    plan = MountPlan()
    try:
        for request in requests:
            await _build(plan, request, volumes, container_id)
    except BaseException:
        # The original error matters more than a failed rollback.
        with contextlib.suppress(BerthError):
            await release_mounts(container_id, volumes, remove_anonymous=True)
        raise
    plan.oci_mounts.sort(key=mount_depth)
    plan.mounts.sort(key=lambda m: m["Destination"])
    return plan


# Start and remove

def _image_dir(rootfs: Path, destination: str) -> Path | None:
    """The image's directory at `destination`, never following a link out;
    `..` stops at the root, as runc resolves the destination."""
    path = rootfs
    for part in Path(os.path.normpath("/" + destination.lstrip("/"))).relative_to("/").parts:
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return None
    return path


async def _copy_into_empty(source: Path, volume: Path) -> None:
    """Copy the image's directory into an empty volume. A running container
    sharing the volume may plant links in it meanwhile, and cp writes through
    a link: the copy goes to a staging directory of a fresh name, reached
    through its open descriptor (a link swapped in for it is never followed),
    and its entries are renamed in (a rename replaces a link, never follows it)."""
    if not volume.is_dir() or any(volume.iterdir()):
        return
    staging, staging_fd = await asyncio.to_thread(_staging_dir, volume)
    try:
        await _cp_all(source, staging_fd, volume)
        await asyncio.to_thread(_move_entries, staging_fd, volume)
    finally:
        os.close(staging_fd)
        await asyncio.to_thread(shutil.rmtree, staging, True)


def _staging_dir(volume: Path) -> tuple[Path, int]:
    """A new directory (mkdir of a random name, mode 0700) on the volume's
    file system, so that its entries can be renamed in, and its open
    descriptor: beside the volume's data, which no container sees, or, for a
    volume that is a mount of its own (tmpfs, nfs), inside the mount's root,
    under a name no container could have planted beforehand."""
    on_own_mount = os.stat(volume.parent).st_dev != os.stat(volume).st_dev
    parent = volume if on_own_mount else volume.parent
    try:
        staging = Path(tempfile.mkdtemp(prefix=".copy-up-", dir=parent))
    except OSError as error:
        raise Internal(f"copying image content into volume {volume}: "
                       f"staging directory in {parent}: {error.strerror}") from error
    try:
        return staging, os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        shutil.rmtree(staging, True)
        raise Internal(f"copying image content into volume {volume}: "
                       f"staging directory {staging}: {error.strerror}") from error


def _move_entries(staging_fd: int, volume: Path) -> None:
    """The staged entries into the volume, and the image directory's owner,
    mode and times (cp gave them to the staging directory) onto it."""
    info = os.fstat(staging_fd)
    os.chown(volume, info.st_uid, info.st_gid)
    os.chmod(volume, stat.S_IMODE(info.st_mode))
    for name in os.listdir(staging_fd):
        if os.path.lexists(volume / name):
            continue    # written by a container meanwhile: theirs stays
        with contextlib.suppress(OSError):    # a directory onto a link planted meanwhile
            os.rename(name, volume / name, src_dir_fd=staging_fd)
    os.utime(volume, ns=(info.st_atime_ns, info.st_mtime_ns))


async def _cp_all(source: Path, target_fd: int, volume: Path) -> None:
    """cp -a of `source`'s content into the open directory `target_fd`."""
    process = await asyncio.create_subprocess_exec(
        "cp", "-a", "--", f"{source}/.", f"/proc/self/fd/{target_fd}/",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, pass_fds=(target_fd,))
    _, errors = await process.communicate()
    if process.returncode != 0:
        raise Internal(f"copying image content into volume {volume}: "
                       f"{errors.decode(errors='replace').strip()}")


def _create_missing_source(path: str) -> None:
    """A missing `-v` host path becomes a directory; an existing file or directory stays."""
    if os.path.exists(path):
        return
    try:
        os.makedirs(path, 0o755, exist_ok=True)
    except OSError as error:
        raise Internal(f"error while creating mount source path '{path}': "
                       f"mkdir {path}: {error.strerror.lower()}") from error


async def copy_up(plan: MountPlan, rootfs: Path) -> None:
    """Prepare a container's mounts at start (rootfs is the mounted overlay).

    Fills each empty volume from the image's directory at its destination,
    keeping ownership, modes and links (`cp -a`), as Docker does on mount;
    creates missing `-v` host directories.
    """
    for path in plan.bind_dirs:
        await asyncio.to_thread(_create_missing_source, path)
    for entry in plan.copy_up:
        image_dir = _image_dir(rootfs, entry["destination"])
        if image_dir is not None:
            await _copy_into_empty(image_dir, Path(entry["source"]))


async def release_mounts(container_id: str, volumes: PeerClient,
                         remove_anonymous: bool) -> None:
    """Drop every volume lease the container holds (at remove)."""
    await volumes.Release(volume_pb2.ReleaseVolumeRequest(
        holder=container_id, remove_anonymous=remove_anonymous))
