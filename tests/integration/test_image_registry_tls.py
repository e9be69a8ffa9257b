"""A registry served over https with a self-signed certificate: loopback
registries are insecure, so berth tries https (any certificate) before
http, as dockerd does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.engine import Engine
from tests.support.image_registry import configured_registry


@pytest.fixture(scope="module")
def tls_registry() -> Iterator[str]:
    with configured_registry("", tls=True) as address:
        yield address


def test_push_and_pull_over_tls(engine: Engine, busybox: str, tls_registry: str) -> None:
    target = f"{tls_registry}/tls/app:1"
    engine.docker("tag", busybox, target)
    assert b"1: digest: sha256:" in engine.docker("push", target).stdout
    subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{target}"],
                   check=True, capture_output=True, timeout=60)
    engine.docker("rmi", target)
    out = engine.docker("pull", target).stdout.decode()
    assert "Status: Downloaded newer image" in out
    engine.docker("rmi", target)
