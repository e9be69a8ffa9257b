"""docker-registry with extra configuration (token auth, TLS) for the image
tests; tests/support/registry.py covers the plain and htpasswd cases."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.registry import REGISTRY_BIN, free_port


def self_signed(directory: Path, name: str = "berth-test") -> tuple[Path, Path]:
    """A throwaway RSA key and certificate (for 127.0.0.1) in `directory`."""
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-subj", f"/CN={name}", "-days", "1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


@contextlib.contextmanager
def configured_registry(extra: str, tls: bool = False,
                        client_ca: Path | None = None) -> Iterator[str]:
    """A registry whose config.yml ends with `extra` (YAML under `http:` is not
    allowed there; pass tls=True for https, and `client_ca` to require client
    certificates it signed); yields its address."""
    root = Path(tempfile.mkdtemp(prefix="berth-registry-"))
    port = free_port()
    tls_block = ""
    if tls:
        key, cert = self_signed(root)
        tls_block = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
        if client_ca:
            tls_block += f"    clientcas:\n      - {client_ca}\n"
    config = root / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root / "storage"}
http:
  addr: 127.0.0.1:{port}
{tls_block}{extra}""")
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    scheme = "https" if tls else "http"
    context = ssl._create_unverified_context()
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v2/", timeout=1,
                                       context=context)
                break
            except urllib.error.HTTPError:
                break
            except OSError as exc:
                if isinstance(exc, ssl.SSLError) or isinstance(getattr(exc, "reason", None),
                                                               ssl.SSLError):
                    break   # it asks for a client certificate: it is up
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((root / "registry.log").read_text()) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
