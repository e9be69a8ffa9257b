"""A build holds the images it stands on (base, the step images, cache hits)
through the image service's leases: `docker image prune -a`, `docker builder
prune -a` and `docker rmi` running during it take none of them, and once it
ends, on success, failure, cancel or a crash of the build service, it holds
nothing any more."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_build import build_service_status
from tests.support.engine import DOCKER_CLI, Engine
from tests.support.polling import wait_for
from tests.support.services import kill_service, service_pid

BASE = "holds-base"
# The label of the last step's image only: the prunes spare it, since once
# the build lets go of it (before the client hears the end) it is theirs.
KEEP = "holds.keep"
SLOW_DOCKERFILE = f"""\
FROM {BASE}
RUN echo one > /one
RUN echo slow && sleep 4 && echo two > /two
COPY f.txt /f.txt
ENV STEP=after
RUN cat /one /two /f.txt > /all
LABEL {KEEP}=yes
"""


@pytest.fixture
def base(engine: Engine, busybox_tar: Path) -> str:
    """The image the build stands on, loaded for each test (the prunes take
    it once no build holds it)."""
    engine.docker("load", "-i", str(busybox_tar))
    engine.docker("tag", "busybox:latest", BASE)
    engine.docker("rmi", "busybox:latest")
    return BASE


def context(root: Path, dockerfile: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "f.txt").write_text("three\n")
    return root


def leases(engine: Engine) -> list[tuple[str, str]]:
    """The owners and holders of the image service's leases."""
    connection = sqlite3.connect(f"file:{engine.data_root / 'image' / 'state.db'}?mode=ro",
                                 uri=True)
    try:
        return connection.execute("SELECT owner, holder FROM leases").fetchall()
    finally:
        connection.close()


def build_holds(engine: Engine) -> list[str]:
    """The holders of the image service's leases the build service owns."""
    return [holder for owner, holder in leases(engine) if owner == "build"]


def start_build(engine: Engine, ctx: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`docker build` in the background, returned once its slow step runs,
    with its output so far."""
    client = subprocess.Popen([DOCKER_CLI, "build", *args, str(ctx)], env=engine.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert client.stdout is not None
    seen = []
    for line in client.stdout:
        seen.append(line)
        if line.strip() == "slow":
            return client, "".join(seen)
    client.wait()
    raise AssertionError("the build ended before its slow step:\n" + "".join(seen))


@contextmanager
def pruning(engine: Engine) -> Iterator[list[str]]:
    """Image and build cache prunes, and `docker rmi` of every dangling
    image, over and over in a thread until the block ends; yields the
    errors of the prunes (there should be none)."""
    stop = threading.Event()
    errors: list[str] = []

    def loop() -> None:
        while not stop.is_set():
            for args in (("image", "prune", "-a", "-f", "--filter", f"label!={KEEP}"),
                         ("builder", "prune", "-a", "-f")):
                result = engine.docker(*args, check=False)
                if result.returncode:
                    errors.append(result.stderr.decode())
            dangling = engine.docker("images", "-aq", "--filter", "dangling=true",
                                     check=False).stdout.decode().split()
            if dangling:
                engine.docker("rmi", *dangling, check=False)
    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join()


def image_ids(engine: Engine) -> set[str]:
    return set(engine.docker("images", "-aq", "--no-trunc").stdout.decode().split())


def test_prunes_during_a_build_take_none_of_its_images(engine: Engine, base: str,
                                                       tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx", SLOW_DOCKERFILE)
    client, _ = start_build(engine, ctx, "-t", "held")
    with pruning(engine) as prune_errors:
        output, _ = client.communicate(timeout=180)
    assert client.returncode == 0, output
    assert prune_errors == []
    assert "Successfully tagged held:latest" in output
    result = engine.docker("run", "--rm", "held", "cat", "/all").stdout
    assert result == b"one\ntwo\nthree\n"
    assert engine.docker("image", "inspect", "held", "--format", "{{.Config.Env}}"
                         ).stdout.decode().count("STEP=after") == 1
    assert build_holds(engine) == []
    # Nothing is held any more: the prunes now take every image.
    engine.docker("image", "prune", "-a", "-f")
    assert image_ids(engine) == set()



def image_id(engine: Engine, name: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{.Id}}", name).stdout.decode().strip()


def test_rmi_of_an_image_a_build_holds_names_the_build(engine: Engine, base: str,
                                                       tmp_path: Path) -> None:
    """An image the build holds is "being used by running build" (no
    container of that name exists) and, like a running container's, cannot
    be forced away; the image the slow step's container runs on gets
    dockerd's own message for that container."""
    source_ctx = context(tmp_path / "source", f"FROM {BASE}\nLABEL source=yes\n")
    engine.docker("build", "-t", "holds-source", str(source_ctx), timeout=180)
    source_id = image_id(engine, "holds-source")
    ctx = context(tmp_path / "ctx", f"FROM {BASE}\nCOPY --from=holds-source /etc/group /group\n"
                                    "RUN echo slow && sleep 4\n")
    client, started = start_build(engine, ctx, "-t", "held")
    try:
        step_image = started.split(" ---> ")[-2].split()[0]
        step_container = started.split(" ---> Running in ")[-1].split()[0]
        for args in (("rmi", source_id), ("rmi", "-f", source_id)):
            refused = engine.docker(*args, check=False).stderr.decode().strip()
            assert refused == (
                f"Error response from daemon: conflict: unable to delete {source_id[7:19]} "
                "(cannot be forced) - image is being used by running build")
        by_name = engine.docker("rmi", "holds-source", check=False).stderr.decode().strip()
        view = engine.docker("ps", "-aq", "--filter", f"ancestor={source_id}").stdout.decode()
        assert by_name == (
            'Error response from daemon: conflict: unable to remove repository reference '
            f'"holds-source" (must force) - container {view.strip()} is using its referenced '
            f"image {source_id[7:19]}")
        in_use = engine.docker("rmi", "-f", step_image, check=False).stderr.decode().strip()
        assert in_use == (
            f"Error response from daemon: conflict: unable to delete {step_image} "
            f"(cannot be forced) - image is being used by running container {step_container}")
    finally:
        output, _ = client.communicate(timeout=180)
    assert client.returncode == 0, output
    assert image_id(engine, "holds-source") == source_id
    assert build_holds(engine) == []
    engine.docker("rmi", "holds-source", "held")

def test_a_rebuild_holds_its_cache_hits(engine: Engine, base: str, tmp_path: Path) -> None:
    """The steps before the slow one come from the cache; they are not
    pruned while the slow step runs (it is not cached: --build-arg)."""
    dockerfile = SLOW_DOCKERFILE.replace("RUN echo slow", "ARG RUN_ID\nRUN echo slow")
    ctx = context(tmp_path / "ctx", dockerfile)
    engine.docker("build", "--build-arg", "RUN_ID=1", "-t", "first", str(ctx), timeout=180)
    engine.docker("rmi", "--no-prune", "first")
    client, started = start_build(engine, ctx, "--build-arg", "RUN_ID=2", "-t", "second")
    assert "Using cache" in started
    with pruning(engine):
        output, _ = client.communicate(timeout=180)
    assert client.returncode == 0, output
    assert engine.docker("run", "--rm", "second", "cat", "/all").stdout == b"one\ntwo\nthree\n"
    assert build_holds(engine) == []
    engine.docker("image", "prune", "-a", "-f")
    assert image_ids(engine) == set()


def test_a_failed_build_holds_nothing(engine: Engine, base: str, tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx", f"FROM {BASE}\nRUN echo one > /one\nRUN exit 3\n")
    result = engine.docker("build", str(ctx), check=False, timeout=180)
    assert result.returncode != 0
    assert build_holds(engine) == []
    engine.docker("image", "prune", "-a", "-f")
    assert image_ids(engine) == set()


def test_a_cancelled_build_holds_nothing(engine: Engine, base: str, tmp_path: Path) -> None:
    client, _ = start_build(engine, context(tmp_path / "ctx", SLOW_DOCKERFILE), "-t", "gone")
    assert build_holds(engine)
    client.kill()
    client.wait()
    wait_for(lambda: not build_holds(engine), timeout=60,
             message="the cancelled build to let go of its images")
    engine.docker("image", "prune", "-a", "-f")
    assert image_ids(engine) == set()


def test_holds_of_a_crashed_build_service_are_dropped_when_it_is_back(
        engine: Engine, base: str, tmp_path: Path) -> None:
    client, _ = start_build(engine, context(tmp_path / "ctx", SLOW_DOCKERFILE),
                            "-t", "crashed")
    try:
        assert build_holds(engine)
        os.kill(build_service_status(engine)["pid"], signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
    wait_for(lambda: not build_holds(engine), timeout=90,
             message="the restarted build service to drop the crashed one's holds")
    wait_for(lambda: not engine.docker("ps", "-aq").stdout.strip(), timeout=90,
             message="the restarted build service to remove the step containers")
    engine.docker("image", "prune", "-a", "-f")
    assert image_ids(engine) == set()


# Kills of the image service in a row before the one under test: `berth up`
# restarts a service that keeps dying later each time (0.2 s doubling), so
# the last kill keeps it away for 6.4 s, past every release of the build.
KILLS_BEFORE = 5


def test_holds_the_image_service_missed_are_dropped_when_it_is_back(
        engine: Engine, base: str, tmp_path: Path) -> None:
    """The image service is killed as the build's last step ends and stays
    away while the build lets go of its images: the releases it missed are
    swept once `berth up` has it back, with no restart of the build service."""
    ctx = context(tmp_path / "ctx", f"FROM {BASE}\nRUN echo one > /one\n"
                                    "RUN echo slow && sleep 0.5\n")
    for _ in range(KILLS_BEFORE):
        kill_service(engine, "image")
    client, _ = start_build(engine, ctx, "-t", "orphaned")
    try:
        image_service = service_pid(engine, "image")
        assert image_service is not None
        os.kill(image_service, signal.SIGKILL)
    finally:
        output, _ = client.communicate(timeout=180)
    assert "Successfully built" not in output
    wait_for(lambda: not build_holds(engine), timeout=60,
             message="the build service to sweep the holds the image service missed")
    # The step container's own lease, which the container service sweeps.
    wait_for(lambda: not leases(engine), timeout=60,
             message="the container service to sweep the lease of the step container")
    engine.docker("image", "prune", "-a", "-f")
    assert image_ids(engine) == set()
