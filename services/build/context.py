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


def _extract(archive: Path, dest: Path) -> None:
    """Unpack refusing members that would land outside `dest`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            ignore = Ignore(_dockerignore_patterns(tar))
            for member in tar:
                name = os.path.normpath(member.name.lstrip("/"))
                if name == ".." or name.startswith("../"):
                    raise InvalidArgument(f"{member.name!r} is outside of {str(dest)!r}")
                if ignore.excluded(name) and name != DOCKERIGNORE:
                    continue
                tar.extract(member, dest, filter="tar")
    except tarfile.OutsideDestinationError as exc:
        raise InvalidArgument(f"{exc.tarinfo.name!r} is outside of {str(dest)!r}") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"failed to read the build context: {exc}") from exc


def _dockerignore_patterns(tar: tarfile.TarFile) -> list[str]:
    try:
        member = tar.getmember(DOCKERIGNORE)
    except KeyError:
        return []
    stream = tar.extractfile(member)
    return read_patterns(stream.read().decode(errors="replace")) if stream else []


def unpack(upload: Path, workdir: Path, dockerfile: str) -> Context:
    """Turn the uploaded bytes into a context directory and read its Dockerfile."""
    root = Path(tempfile.mkdtemp(prefix="context-", dir=workdir))
    try:
        if _is_archive(upload):
            _extract(upload, root)
        else:
            shutil.copyfile(upload, root / "Dockerfile")
            dockerfile = "Dockerfile"
        name = dockerfile or "Dockerfile"
        path = (root / name.lstrip("/")).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            if not dockerfile and (root / "dockerfile").is_file():
                path, name = root / "dockerfile", "dockerfile"
            else:
                raise InvalidArgument(f"Cannot locate specified Dockerfile: {name}")
        return Context(root=root, dockerfile_text=path.read_text(errors="replace"),
                       dockerfile_name=name)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
