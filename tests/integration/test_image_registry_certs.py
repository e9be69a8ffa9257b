"""certs.d: a registry that asks for client certificates is reached with the
client certificate and key in `<certs-dir>/<host:port>/`, as Docker reads
/etc/docker/certs.d; without them the push fails, and a certificate
without its key gets Docker's message."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import Engine, running_engine
from tests.support.image_registry import configured_registry


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    """A CA and a client certificate it signed."""
    directory = Path(tempfile.mkdtemp(prefix="berth-pki-"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(directory / "ca.key"),
            "-out", str(directory / "ca.crt"), "-subj", "/CN=berth-test-ca", "-days", "1")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(directory / "client.key"),
            "-out", str(directory / "client.csr"), "-subj", "/CN=berth-test-client")
    openssl("x509", "-req", "-in", str(directory / "client.csr"), "-CA",
            str(directory / "ca.crt"), "-CAkey", str(directory / "ca.key"), "-CAcreateserial",
            "-out", str(directory / "client.cert"), "-days", "1")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def certs_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="berth-certs.d-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(certs_dir: Path) -> Iterator[Engine]:
    config = certs_dir.parent / f"{certs_dir.name}.json"
    config.write_text(json.dumps({"certs-dir": str(certs_dir)}))
    try:
        with running_engine(args=("--config", str(config))) as running:
            yield running
    finally:
        config.unlink()


@pytest.fixture(scope="module")
def mtls_registry(pki: Path) -> Iterator[str]:
    with configured_registry("", tls=True, client_ca=pki / "ca.crt") as address:
        yield address


def test_push_needs_the_client_certificate_from_certs_d(engine: Engine, busybox: str,
                                                        mtls_registry: str, pki: Path,
                                                        certs_dir: Path) -> None:
    target = f"{mtls_registry}/certs/app:1"
    engine.docker("tag", busybox, target)
    assert engine.docker("push", target, check=False).returncode != 0
    host_dir = certs_dir / mtls_registry
    host_dir.mkdir()
    for name in ("client.cert", "client.key"):
        shutil.copy(pki / name, host_dir / name)
    assert b"1: digest: sha256:" in engine.docker("push", target).stdout
    engine.docker("rmi", target)
    assert "Status: Downloaded newer image" in engine.docker("pull", target).stdout.decode()
    engine.docker("rmi", target)
    shutil.rmtree(host_dir)


def test_a_client_certificate_without_its_key_is_refused(engine: Engine, busybox: str,
                                                         mtls_registry: str, pki: Path,
                                                         certs_dir: Path) -> None:
    host_dir = certs_dir / mtls_registry
    host_dir.mkdir()
    shutil.copy(pki / "client.cert", host_dir / "client.cert")
    try:
        pulled = engine.docker("pull", f"{mtls_registry}/certs/none:1", check=False)
        assert pulled.returncode != 0
        assert ("missing key client.key for client certificate client.cert. "
                "CA certificates must use the extension .crt") in pulled.stderr.decode()
    finally:
        shutil.rmtree(host_dir)
