"""Docker's `local` volume driver: a directory per volume, optionally a mount.

A volume lives in ROOT/<name>/_data. With driver options (type, device, o)
that directory is the mount point of whatever mount(8) makes of them (tmpfs,
a bind of a host path, nfs, ...), mounted while the volume has a lease.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from services.common.errors import Internal, InvalidArgument

VALID_OPTIONS = ("type", "device", "o", "size")
# An option that is set requires these others, as in moby's local driver.
REQUIRED_WITH = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
NAME_MAX = 255


def validate_options(options: dict[str, str]) -> None:
    for key in options:
        if key not in VALID_OPTIONS:
            raise InvalidArgument(f'invalid option: "{key}"')
    if "size" in options:
        raise InvalidArgument("quota size requested but no quota support")
    for key, value in options.items():
        if "\0" in value:
            raise InvalidArgument(f'invalid option "{key}": a NUL character in its value')
    for key, required in REQUIRED_WITH.items():
        if key in options:
            for other in required:
                if other not in options:
                    raise InvalidArgument(f'missing required option: "{other}"')


class LocalDriver:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def data_path(self, name: str) -> Path:
        return self.root / name / "_data"

    def make(self, name: str) -> None:
        """Create the volume's directories (Docker's modes: 0701 and 0755)."""
        base = self.root / name
        if len(name) > NAME_MAX:
            raise InvalidArgument(
                f"error while creating volume root path '{base}': "
                f"mkdir {base}: file name too long")
        base.mkdir(mode=0o701, exist_ok=True)
        self.data_path(name).mkdir(mode=0o755, exist_ok=True)

    def names_on_disk(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir()]

    def is_mounted(self, name: str) -> bool:
        return os.path.realpath(self.data_path(name)) in mount_points()

    async def remove(self, name: str) -> None:
        """Delete the volume's directory; never while something is mounted on it."""
        if self.is_mounted(name):
            await self.unmount(name)
        await asyncio.to_thread(shutil.rmtree, self.root / name, True)

    async def mount(self, name: str, options: dict[str, str]) -> None:
        """Mount what the options describe on the volume's _data directory."""
        path = self.data_path(name)
        args = ["mount", "-t", options["type"]]
        if options.get("o"):
            args += ["-o", options["o"]]
        # `--`: a device such as "--all" or "-L" is a name, never a mount(8) option.
        args += ["--", options["device"], str(path)]
        code, output = await _run(args)
        if code != 0:
            raise Internal(f"error while mounting volume '{path}': "
                           f"failed to mount local volume: {output}")

    async def unmount(self, name: str) -> None:
        path = self.data_path(name)
        code, output = await _run(["umount", str(path)])
        if code != 0 and self.is_mounted(name):
            raise Internal(f"error while unmounting volume '{path}': {output}")

    async def size(self, name: str) -> int:
        return await asyncio.to_thread(directory_size, self.data_path(name))


def mount_points() -> set[str]:
    """Every mount point in this mount namespace.

    From /proc/self/mountinfo, not os.path.ismount: a bind mount from the same
    file system (a `o=bind` volume) looks like a plain directory to ismount.
    """
    with open("/proc/self/mountinfo") as mountinfo:
        return {_unescape(line.split()[4]) for line in mountinfo}


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def directory_size(path: Path) -> int:
    """Bytes in regular files below `path`, each hard-linked inode once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


async def _run(args: list[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace").strip()
