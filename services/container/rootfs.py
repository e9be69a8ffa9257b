"""A container's root file system (overlayfs over the image's layer dirs)
and what is read from it before start: users and groups."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from services.common.errors import Internal, InvalidArgument
from services.common.scoped import secure_join
from services.container.spec import User

MAX_ACCOUNTS_FILE = 16 << 20   # a passwd or group file larger is not read further


async def mount_overlay(lower_dirs: list[str], upper: Path, work: Path, target: Path) -> None:
    """Mount the overlay. The options must fit in a page (4096 bytes): the
    layer dirs are named relative to their common parent, which the mount
    runs in, so images with many layers fit."""
    if target.is_mount():
        return
    target.mkdir(exist_ok=True)
    parent = os.path.commonpath(lower_dirs) if len(lower_dirs) > 1 else ""
    lowers = [os.path.relpath(d, parent) for d in lower_dirs] if parent else lower_dirs
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    await _run("mount", "-t", "overlay", "overlay", "-o", options, str(target),
               cwd=parent or None)


async def unmount(target: Path) -> None:
    if target.is_mount():
        await _run("umount", str(target))


async def _run(*args: str, cwd: str | None = None) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, cwd=cwd)
    _, err = await process.communicate()
    if process.returncode != 0:
        raise Internal(f"{args[0]} failed: {err.decode(errors='replace').strip()}")


def _entries(rootfs: Path, name: str, numeric: tuple[int, ...]) -> list[list[str]]:
    """The lines of the container's /etc/`name`, read inside its root: a
    symlink there (the image's or a running container's) never reaches a
    host file, and only a regular file is read. Lines whose ID fields are
    not numbers are left out."""
    try:
        path = secure_join(str(rootfs), f"/etc/{name}")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, errors="replace") as file:
            # A device node or FIFO there is the container's, not read by us.
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            text = file.read(MAX_ACCOUNTS_FILE)
    except (OSError, InvalidArgument):
        return []
    entries = [line.split(":") for line in text.splitlines()
               if line and not line.startswith("#")]
    return [e for e in entries if all(len(e) > i and e[i].isdigit() for i in numeric)]


def _find_group(groups: list[list[str]], name: str) -> int | None:
    for entry in groups:
        if len(entry) >= 3 and (entry[0] == name or entry[2] == name):
            return int(entry[2])
    return int(name) if name.isdigit() else None


def resolve_user(rootfs: Path, spec: str, group_add: list[str],
                 image_groups: bool = True) -> User:
    """Docker's user lookup: `uid`, `name`, `uid:gid`, `name:group` in the image;
    the user's /etc/group memberships unless `image_groups` is False."""
    passwd = _entries(rootfs, "passwd", (2, 3))
    groups = _entries(rootfs, "group", (2,))
    name, _, group = (spec or "0").partition(":")
    user = User()
    for entry in passwd:
        if len(entry) >= 6 and (entry[0] == name or entry[2] == name):
            user = User(uid=int(entry[2]), gid=int(entry[3]), home=entry[5])
            break
    else:
        if not name.isdigit():
            raise InvalidArgument(f"unable to find user {name}: no matching entries in "
                                  "passwd file")
        user = User(uid=int(name), gid=_default_gid(passwd, name))
    if group:
        gid = _find_group(groups, group)
        if gid is None:
            raise InvalidArgument(f"unable to find group {group}: no matching entries in "
                                  "group file")
        user.gid = gid
    user_name = next((e[0] for e in passwd if len(e) >= 3 and e[2] == str(user.uid)), None)
    for entry in groups if image_groups else []:
        member = len(entry) >= 4 and user_name and user_name in entry[3].split(",")
        if member and int(entry[2]) != user.gid:
            user.additional_gids.append(int(entry[2]))
    for extra in group_add:
        gid = _find_group(groups, extra)
        if gid is None:
            raise InvalidArgument(f"Unable to find group {extra}: no matching entries in "
                                  "group file")
        user.additional_gids.append(gid)
    return user


def _default_gid(passwd: list[list[str]], uid: str) -> int:
    for entry in passwd:
        if len(entry) >= 4 and entry[2] == uid:
            return int(entry[3])
    return 0

