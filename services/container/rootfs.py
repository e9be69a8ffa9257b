"""A container's root file system (overlayfs over the image's layer dirs)
and what is read from it before start: users and groups."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from services.common.errors import Internal, InvalidArgument
from services.container.spec import User


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


def _entries(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _find_group(groups: list[list[str]], name: str) -> int | None:
    for entry in groups:
        if len(entry) >= 3 and (entry[0] == name or entry[2] == name):
            return int(entry[2])
    return int(name) if name.isdigit() else None


def resolve_user(rootfs: Path, spec: str, group_add: list[str],
                 image_groups: bool = True) -> User:
    """Docker's user lookup: `uid`, `name`, `uid:gid`, `name:group` in the image;
    the user's /etc/group memberships unless `image_groups` is False."""
    passwd = _entries(rootfs / "etc/passwd")
    groups = _entries(rootfs / "etc/group")
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

