"""A throwaway CA with server and client certificates, made with openssl."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(directory: Path, addresses: tuple[str, ...] = ()) -> Certs:
    """A CA and one certificate (server and client use) for 127.0.0.1/localhost
    and the IP `addresses`."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca-key.pem", "-out", "ca.pem", "-subj", "/CN=berth-test-ca",
             cwd=directory)
    ips = ",".join(f"IP:{address}" for address in ("127.0.0.1", *addresses))
    (directory / "ext.cnf").write_text(
        f"subjectAltName={ips},DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr",
             "-subj", "/CN=localhost", cwd=directory)
    _openssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
             "-CAcreateserial", "-days", "2", "-out", "cert.pem", "-extfile", "ext.cnf",
             cwd=directory)
    return Certs(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
