"""The build context: a tar (plain or compressed) or a lone Dockerfile,
unpacked into a private directory with `.dockerignore` applied."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.build.dockerignore import Ignore, read_patterns
from services.common.errors import InvalidArgument

DOCKERIGNORE = ".dockerignore"


@dataclass
class Context:
    root: Path
    dockerfile_text: str
    dockerfile_name: str

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _is_archive(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _extract(archive: Path, dest: Path, dockerfile: str) -> Ignore:
    """Unpack refusing members that would land outside `dest`; what
    .dockerignore excludes stays out, except the Dockerfile and the
    .dockerignore itself, which are read first (and removed after, when
    excluded, as Docker does)."""
    keep = {DOCKERIGNORE, os.path.normpath(dockerfile.lstrip("/"))}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _members(tar)
            ignore = Ignore(_dockerignore_patterns(tar, members))
            for member in members:
                name = os.path.normpath(member.name.lstrip("/"))
                if name == ".." or name.startswith("../"):
                    raise InvalidArgument(f'"{member.name}" is outside of "{dest}"')
                if ignore.excluded(name) and name not in keep:
                    continue
                tar.extract(member, dest, filter="tar")
        return ignore
    except tarfile.OutsideDestinationError as exc:
        raise InvalidArgument(f'"{exc.tarinfo.name}" is outside of "{dest}"') from exc
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"failed to read the build context: {exc}") from exc


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member; an archive whose last block lacks its padding (the
    docker CLI sends one for `-f` outside the context) ends there."""
    members = []
    while True:
        try:
            member = tar.next()
        except tarfile.ReadError as exc:
            if members and str(exc) == "unexpected end of data":
                return members
            raise
        if member is None:
            return members
        members.append(member)


def _dockerignore_patterns(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> list[str]:
    found = [m for m in members if os.path.normpath(m.name) == DOCKERIGNORE and m.isreg()]
    stream = tar.extractfile(found[-1]) if found else None
    return read_patterns(stream.read().decode(errors="replace")) if stream else []


def unpack(upload: Path, workdir: Path, dockerfile: str) -> Context:
    """Turn the uploaded bytes into a context directory and read its Dockerfile."""
    root = Path(tempfile.mkdtemp(prefix="context-", dir=workdir))
    name = dockerfile or "Dockerfile"
    try:
        ignore = Ignore([])
        if _is_archive(upload):
            ignore = _extract(upload, root, name)
        else:
            shutil.copyfile(upload, root / "Dockerfile")
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
        return Context(root=root, dockerfile_text=text, dockerfile_name=name)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
