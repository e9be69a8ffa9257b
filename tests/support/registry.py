"""Debian's docker-registry on a free loopback port, for pull/push tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
SKOPEO = "/usr/bin/skopeo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def skopeo_copy(source: str, dest: str) -> None:
    """Copy an image with skopeo, an independent client (plain http allowed)."""
    subprocess.run([SKOPEO, "copy", "--quiet", "--src-tls-verify=false",
                    "--dest-tls-verify=false", source, dest],
                   check=True, capture_output=True, timeout=120)


@dataclass
class Registry:
    port: int
    root: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def registry_config(address: str, storage: Path, htpasswd: Path | None = None) -> str:
    """docker-registry's config: serving `address` (HOST:PORT), blobs under `storage`."""
    auth = ""
    if htpasswd is not None:
        auth = f"""auth:
  htpasswd:
    realm: berth-test
    path: {htpasswd}
"""
    return f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {address}
{auth}"""


@contextlib.contextmanager
def running_registry(htpasswd: Path | None = None) -> Iterator[Registry]:
    root = Path(tempfile.mkdtemp(prefix="berth-registry-"))
    port = free_port()
    config = root / "config.yml"
    config.write_text(registry_config(f"127.0.0.1:{port}", root / "storage", htpasswd))
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 from an auth-enabled registry: it is up
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((root / "registry.log").read_text()) from None
                time.sleep(0.1)
        yield Registry(port, root)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
