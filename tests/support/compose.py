"""Docker Compose 1.29 (Debian's docker-compose) projects run against an engine."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.engine import Engine

COMPOSE = shutil.which("docker-compose")


class ComposeProject:
    """`project(*args)` runs docker-compose on the project file in `directory`
    under a project name of its own, with the classic builder as Compose 1.29
    uses it."""

    def __init__(self, engine: Engine, directory: Path, name: str) -> None:
        assert COMPOSE is not None, "docker-compose is not installed"
        self.engine = engine
        self.dir = directory
        self.name = name
        self._env = dict(engine.env(), COMPOSE_DOCKER_CLI_BUILD="0", DOCKER_BUILDKIT="0")

    def __call__(self, *args: str, check: bool = True,
                 api_version: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self._env, COMPOSE_API_VERSION=api_version) if api_version else self._env
        result = subprocess.run([COMPOSE, "-p", self.name, *args], cwd=self.dir, env=env,
                                capture_output=True, text=True, timeout=180)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited "
                                 f"{result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def write(self, text: str) -> None:
        (self.dir / "docker-compose.yml").write_text(text)

    def containers(self) -> list[str]:
        """IDs of every container of the project, running or not."""
        result = self.engine.docker("ps", "-aq", "--filter",
                                    f"label=com.docker.compose.project={self.name}")
        return result.stdout.decode().split()

    def log_lines(self, service: str) -> list[str]:
        """What a service printed, without the `name_1  | ` prefixes."""
        output = self("logs", "--no-color", service).stdout
        return [line.partition("| ")[2] for line in output.splitlines() if "| " in line]

    def ps_states(self) -> dict[str, str]:
        """Service container name -> its line of `docker-compose ps`."""
        lines = self("ps").stdout.splitlines()[2:]
        return {line.split()[0]: line for line in lines if line.strip()}


@contextlib.contextmanager
def compose_project(engine: Engine, directory: Path, name: str) -> Iterator[ComposeProject]:
    """A project that is taken down with its volumes and built images at the end."""
    project = ComposeProject(engine, directory, name)
    try:
        yield project
    finally:
        if (directory / "docker-compose.yml").exists():
            project("down", "-v", "-t", "1", "--rmi", "local", check=False)
