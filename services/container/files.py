"""A container's files: docker cp (stat, get and put an archive), docker
diff and docker export, on its live root when it runs and on its mounted
rootfs when it does not; and that rootfs kept mounted for a caller
(KeepMounted)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import Internal, PermissionDenied
from services.container import archive, rootfs, upperdir
from services.container.chroot_thread import run_chrooted, tar_chrooted, untar_chrooted
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.store import Container


class Files:
    def __init__(self, manager: Manager, events: ContainerEvents) -> None:
        self._manager = manager
        self._events = events
        self._mount_users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def _filesystem(self, container: Container, live: bool) -> AsyncIterator[str]:
        """The container's root: its live view with every mount (/proc/<pid>/root)
        when `live` and running, else the overlay rootfs, mounted for the
        duration when the container is stopped."""
        if live and container.state.pid and container.state.status in ("running", "paused"):
            yield f"/proc/{container.state.pid}/root"
            return
        bundle = self._manager.bundle(container)
        cid = container.id
        # The same lock at the end: a removal in between drops the container's
        # lock, and asking for it again would make one that stays behind.
        lock = self._manager.lock(cid)
        async with lock:
            if self._mount_users.get(cid, 0) == 0 and not container.running:
                await rootfs.mount_overlay(container.lower_dirs, bundle.path / "upper",
                                           bundle.path / "work", bundle.rootfs)
            self._mount_users[cid] = self._mount_users.get(cid, 0) + 1
        bound: list[str] = []
        try:
            if live:
                bound = await _bind_volumes(str(bundle.rootfs), container)
            yield str(bundle.rootfs)
        finally:
            for target in reversed(bound):
                await _run("umount", target)
            async with lock:
                self._mount_users[cid] -= 1
                if self._mount_users[cid] == 0:
                    del self._mount_users[cid]
                    if not container.running:
                        await rootfs.unmount(bundle.rootfs)

    @contextlib.asynccontextmanager
    async def kept_mounted(self, ref: str) -> AsyncIterator[None]:
        """The container's own file system mounted for the block: the
        rootfs_only reads within it mount nothing more."""
        async with self._filesystem(self._manager.get(ref), live=False):
            yield

    @staticmethod
    def _not_found(path: str, container: Container) -> str:
        return f"Could not find the file {path} in container {container.name}"

    async def stat_path(self, ref: str, path: str, rootfs_only: bool = False
                        ) -> archive.PathInfo:
        """`rootfs_only`: without the volumes and bind mounts."""
        container = self._manager.get(ref)
        async with self._filesystem(container, live=not rootfs_only) as root:
            return await run_chrooted(root, partial(archive.stat_path, "/", path,
                                                    self._not_found(path, container)))

    async def get_archive(self, ref: str, path: str, rootfs_only: bool = False
                          ) -> AsyncIterator[archive.PathInfo | bytes]:
        """The path's stat first, then the tar's bytes; `rootfs_only`:
        without the volumes and bind mounts."""
        container = self._manager.get(ref)
        async with self._filesystem(container, live=not rootfs_only) as root:
            info = await run_chrooted(root, partial(archive.stat_path, "/", path,
                                                    self._not_found(path, container)))
            yield info
            async for chunk in tar_chrooted(root, partial(archive.write_tar, "/", path)):
                yield chunk
        self._events.publish("archive-path", container)

    async def put_archive(self, options: container_pb2.PutArchiveOptions,
                          data: AsyncIterator[bytes]) -> None:
        container = self._manager.get(options.id)
        user = container.config.user if options.copy_uid_gid else ""
        async with self._filesystem(container, live=True) as root:
            directory, owner = await run_chrooted(root, partial(
                _extraction_target, options.path, user,
                self._not_found(options.path, container)))
            extract = archive.ExtractOptions(
                no_overwrite_dir_non_dir=options.no_overwrite_dir_non_dir, owner=owner)
            await untar_chrooted(root, directory, extract, data)
        self._events.publish("extract-to-dir", container)

    async def changes(self, ref: str) -> list[upperdir.Change]:
        container = self._manager.get(ref)
        upper = self._manager.bundle(container).path / "upper"
        if not upper.is_dir():
            return []
        return await asyncio.to_thread(upperdir.changes, str(upper), container.lower_dirs)

    async def export(self, ref: str) -> AsyncIterator[bytes]:
        container = self._manager.get(ref)
        async with self._filesystem(container, live=False) as root:
            async for chunk in tar_chrooted(root, partial(archive.write_tree_tar, "/")):
                yield chunk
        self._events.publish("export", container)


def _extraction_target(path: str, user: str, not_found: str
                       ) -> tuple[str, tuple[int, int] | None]:
    """In the container's root: the directory an archive goes into, checked
    writable, and the owner of what is copied in (archive mode with a user;
    without one the tar's owners stay, as Docker does)."""
    directory = archive.extraction_dir("/", path, not_found)
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        on_rootfs = os.stat(directory).st_dev == os.stat("/").st_dev
        raise PermissionDenied("container rootfs is marked read-only" if on_rootfs
                               else "mounted volume is marked read-only")
    if not user:
        return directory, None
    resolved = rootfs.resolve_user(Path("/"), user, [])
    return directory, (resolved.uid, resolved.gid)


async def _run(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise Internal(f"{args[0]} failed: {err.decode(errors='replace').strip()}")


async def _bind_volumes(root: str, container: Container) -> list[str]:
    """Bind the volumes and bind mounts of a stopped container into its
    mounted rootfs, as they are when it runs; returns the targets."""
    bound: list[str] = []
    points = [m for m in container.mounts.mount_points() if m.type in ("volume", "bind")]
    try:
        for point in sorted(points, key=lambda m: len(m.destination)):
            target = archive.secure_join(root, point.destination)
            if not os.path.lexists(target):
                if os.path.isdir(point.source):
                    os.makedirs(target, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    Path(target).touch()
            await _run("mount", "--bind", point.source, target)
            bound.append(target)
            if not point.rw:
                await _run("mount", "-o", "remount,bind,ro", target)
    except BaseException:
        for target in reversed(bound):
            with contextlib.suppress(Internal):
                await _run("umount", target)
        raise
    return bound
