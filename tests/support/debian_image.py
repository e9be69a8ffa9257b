"""A Debian bookworm image with real server software, made with debootstrap.

busybox hides differences real software sees (nginx's own resolver, a
Python runtime, redis), so stack tests run on a minbase Debian with the
packages they need, fetched from the Debian mirror the host's apt uses.
The rootfs tarball is cached outside the repository, keyed by the recipe,
so only the first run pays for debootstrap (about a minute).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.engine import Engine, unmount_below

SUITE = "bookworm"
STACK_PACKAGES = ("nginx-light", "redis-server", "python3")
CACHE = Path(os.environ.get("BERTH_TEST_CACHE", "/var/cache/berth-tests"))
RECIPE_VERSION = "1"   # bump when the steps below change what the tarball holds
# Left out of the image as Docker's debian images leave them out: the engine
# provides /dev, /proc, /sys and /run, and apt's downloads only add weight.
EXCLUDED = ("./dev/*", "./proc/*", "./sys/*", "./run/*", "./tmp/*",
            "./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*",
            "./var/log/*.log", "./var/log/apt/*", "./etc/hostname", "./etc/resolv.conf")


def debian_mirror(suite: str = SUITE) -> str:
    """The URI apt fetches `suite` from on this host (deb.debian.org here)."""
    result = subprocess.run(
        ["apt-get", "indextargets", "--no-release-info", "--format", "$(REPO_URI)",
         f"Release: {suite}", "Identifier: Packages"],
        capture_output=True, text=True, check=False)
    uris = result.stdout.split()
    if result.returncode != 0 or not uris:
        raise RuntimeError(f"apt has no source for Debian {suite} on this host; add one to "
                           f"/etc/apt/sources.list.d/ (apt-get said: {result.stderr.strip()})")
    return uris[0]


def rootfs_tarball(packages: tuple[str, ...] = STACK_PACKAGES, suite: str = SUITE) -> Path:
    """The cached rootfs tar of a minbase `suite` with `packages`, built on first use."""
    key = hashlib.sha256(
        "\n".join([RECIPE_VERSION, suite, *sorted(packages)]).encode()).hexdigest()[:16]
    tarball = CACHE / f"debian-{suite}-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / f"{tarball.name}.lock"):
        if not tarball.exists():
            _build(tarball, packages, suite)
    return tarball


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time: a second test session waits, then reuses the tarball."""
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(tarball: Path, packages: tuple[str, ...], suite: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
    try:
        rootfs = workdir / "rootfs"
        _debootstrap(rootfs, packages, suite, workdir / "debootstrap.log")
        partial = workdir / "rootfs.tar"
        subprocess.run(["tar", "--create", "--file", str(partial), "--numeric-owner",
                        "--xattrs", "--one-file-system", "--directory", str(rootfs),
                        *(f"--exclude={pattern}" for pattern in EXCLUDED), "."],
                       check=True, capture_output=True)
        partial.rename(tarball)
    finally:
        # debootstrap mounts /proc and /sys inside the tree: unmount before removing.
        unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _debootstrap(rootfs: Path, packages: tuple[str, ...], suite: str, log: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise RuntimeError("debootstrap is not installed (`make deps` or "
                           "`apt-get install debootstrap`)")
    mirror = debian_mirror(suite)
    command = [debootstrap, "--variant=minbase", f"--include={','.join(packages)}",
               suite, str(rootfs), mirror]
    with log.open("wb") as output:
        result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT,
                                timeout=1800, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"debootstrap of Debian {suite} from {mirror} failed "
                           f"(exit {result.returncode}); is the mirror reachable?\n{tail}")


def import_image(engine: Engine, tarball: Path, reference: str) -> str:
    """`docker import` the rootfs as `reference`, with Docker's debian image's CMD."""
    engine.docker("import", "--change", 'CMD ["bash"]', str(tarball), reference,
                  timeout=300)
    return reference
