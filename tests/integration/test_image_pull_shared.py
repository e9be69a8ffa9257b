"""A layer shared by two images in a registry is downloaded and stored once."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from tests.support.engine import Engine
from tests.support.images import image_archive
from tests.support.registry import Registry


def layer(name: str, size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(range(256)) * (size // 256)))
    return buf.getvalue()


def push(registry: Registry, tmp_path: Path, layers: list[bytes], name: str) -> str:
    archive = tmp_path / f"{name}.tar"
    archive.write_bytes(image_archive(layers, [f"{name}:1"], compress=True))
    ref = f"{registry.address}/shared/{name}:1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"docker-archive:{archive}", f"docker://{ref}"],
                   check=True, capture_output=True, timeout=120)
    return ref


def test_shared_layer_downloaded_and_stored_once(engine: Engine, registry: Registry,
                                                 tmp_path: Path) -> None:
    base = layer("base.bin", 1 << 20)
    first = push(registry, tmp_path, [base, layer("one.bin", 4096)], "first")
    second = push(registry, tmp_path, [base, layer("two.bin", 8192)], "second")
    try:
        engine.docker("pull", first)
        blobs = engine.data_root / "image" / "blobs" / "sha256"
        stored = {p.name for p in blobs.iterdir()}
        out = engine.docker("pull", second).stdout.decode()
        lines = out.splitlines()
        assert sum("Already exists" in line for line in lines) == 1, out
        assert sum("Pull complete" in line for line in lines) == 1, out
        added = {p.name for p in blobs.iterdir()} - stored
        assert len(added) == 2, added  # the second image's own layer and config: not the base
        layers = engine.data_root / "image" / "layers"
        assert len([p for p in layers.iterdir() if not p.name.startswith(".")
                    and p.name != "empty"]) == 3  # base, and each image's own layer
    finally:
        engine.docker("rmi", first, second, check=False)
