"""Registry credentials: docker login against an htpasswd (Basic) registry,
pulls and pushes with and without credentials, and a registry that dies
in the middle of a blob."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from aiohttp import web

from tests.support.engine import Engine
from tests.support.images import file_layer, image_archive
from tests.support.registry import Registry, free_port, running_registry

USER, PASSWORD = "berth", "s3cret"


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    htpasswd = tmp_path_factory.mktemp("htpasswd") / "htpasswd"
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                          capture_output=True, text=True).stdout.strip()
    htpasswd.write_text(line + "\n")
    with running_registry(htpasswd=htpasswd) as registry:
        yield registry


@pytest.fixture(scope="module")
def seeded(auth_registry: Registry, busybox_tar: Path) -> str:
    name = f"{auth_registry.address}/private/busybox:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds",
                    f"{USER}:{PASSWORD}", f"docker-archive:{busybox_tar}", f"docker://{name}"],
                   check=True, capture_output=True, timeout=120)
    return name


def assert_pull_unauthorized(engine: Engine, name: str, auth: dict | None = None) -> None:
    """The SDK, not the CLI: the CLI answers a 401 with an interactive login prompt."""
    with pytest.raises(docker.errors.APIError) as caught:
        engine.client().images.pull(name, auth_config=auth)
    assert caught.value.status_code == 401
    assert "unauthorized" in str(caught.value).lower()


def test_login_pull_push_logout(engine: Engine, busybox: str, auth_registry: Registry,
                                seeded: str) -> None:
    assert_pull_unauthorized(engine, seeded)
    assert_pull_unauthorized(engine, seeded, {"username": USER, "password": "wrong"})

    wrong = engine.docker("login", "-u", USER, "--password-stdin", auth_registry.address,
                          input=b"wrong\n", check=False)
    assert wrong.returncode != 0
    assert b"401 Unauthorized" in wrong.stderr

    ok = engine.docker("login", "-u", USER, "--password-stdin", auth_registry.address,
                       input=PASSWORD.encode() + b"\n")
    assert b"Login Succeeded" in ok.stdout
    out = engine.docker("pull", seeded).stdout.decode()
    assert "Status: Downloaded newer image" in out
    target = f"{auth_registry.address}/private/pushed:1"
    engine.docker("tag", busybox, target)
    assert b"1: digest: sha256:" in engine.docker("push", target).stdout
    engine.docker("logout", auth_registry.address)
    engine.docker("rmi", seeded, target)
    assert_pull_unauthorized(engine, seeded)
    assert engine.docker("images", "-q", seeded).stdout.strip() == b""


class DyingRegistry:
    """Serves one image whose layer blob is cut off half way."""

    def __init__(self) -> None:
        layer = bytes(range(256)) * 4096
        archive = image_archive([file_layer(layer, "blob.bin")], ["x:1"])
        self.layer = file_layer(layer, "blob.bin")
        self.layer_digest = "sha256:" + hashlib.sha256(self.layer).hexdigest()
        config = json.loads(_member(archive, "manifest.json"))[0]["Config"]
        self.config = _member(archive, config)
        self.config_digest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(self.config), "digest": self.config_digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                        "size": len(self.layer), "digest": self.layer_digest}]}).encode()
        self.port = free_port()

    async def ping_handler(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def manifest_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.manifest, content_type="application/vnd.docker."
                                                              "distribution.manifest.v2+json")

    async def blob_handler(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["digest"] == self.config_digest:
            return web.Response(body=self.config)
        response = web.StreamResponse(headers={"Content-Length": str(len(self.layer))})
        await response.prepare(request)
        await response.write(self.layer[: len(self.layer) // 2])
        request.transport.close()
        return response

    def serve(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        app = web.Application()
        app.router.add_get("/v2/", self.ping_handler)
        app.router.add_get("/v2/dying/manifests/{ref}", self.manifest_handler)
        app.router.add_get("/v2/dying/blobs/{digest}", self.blob_handler)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        self.runner = runner
        return loop, thread


def _member(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return tar.extractfile(name).read()


def test_registry_dying_mid_blob(engine: Engine, tmp_path: Path) -> None:
    registry = DyingRegistry()
    loop, thread = registry.serve()
    try:
        before = set((engine.data_root / "image" / "blobs" / "sha256").iterdir())
        result = engine.docker("pull", f"127.0.0.1:{registry.port}/dying:1", check=False)
        assert result.returncode != 0
        assert engine.docker("images", "-q", f"127.0.0.1:{registry.port}/dying").stdout == b""
        after = set((engine.data_root / "image" / "blobs" / "sha256").iterdir())
        assert after == before
        assert list((engine.data_root / "image" / "tmp").iterdir()) == []
    finally:
        asyncio.run_coroutine_threadsafe(registry.runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
