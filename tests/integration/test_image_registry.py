"""Pull and push against a real registry (Debian's docker-registry), with
skopeo as an independent client, and the failures a pull must survive."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import grpc
import httpx
import pytest

from berth.types.v1 import types_pb2, types_pb2_grpc
from tests.support.engine import BERTH, REPO, Engine
from tests.support.images import file_layer, image_archive
from tests.support.registry import SKOPEO, Registry, skopeo_copy


@pytest.fixture(scope="module")
def seeded(registry: Registry, busybox_tar: Path) -> str:
    """busybox put into the registry by skopeo, as <registry>/seed/busybox:1."""
    name = f"{registry.address}/seed/busybox:1"
    skopeo_copy(f"docker-archive:{busybox_tar}", f"docker://{name}")
    return name


def test_pull_progress_and_digests(engine: Engine, seeded: str) -> None:
    out = engine.docker("pull", seeded).stdout.decode()
    assert "1: Pulling from seed/busybox" in out
    assert "Pull complete" in out
    assert "Digest: sha256:" in out
    assert f"Status: Downloaded newer image for {seeded}" in out
    again = engine.docker("pull", seeded).stdout.decode()
    assert f"Status: Image is up to date for {seeded}" in again
    data = json.loads(engine.docker("image", "inspect", seeded).stdout)[0]
    repo_digest = data["RepoDigests"][0]
    assert repo_digest.startswith(seeded.rsplit(":", 1)[0] + "@sha256:")
    engine.docker("rmi", seeded)
    by_digest = engine.docker("pull", repo_digest).stdout.decode()
    assert "Digest: " + repo_digest.split("@")[1] in by_digest
    again = engine.docker("pull", repo_digest).stdout.decode()
    assert f"Status: Image is up to date for {repo_digest}" in again
    engine.docker("rmi", repo_digest)


def test_pull_json_stream(engine: Engine, seeded: str) -> None:
    client = engine.client()
    repo, tag = seeded.rsplit(":", 1)
    lines = list(client.api.pull(repo, tag=tag, stream=True, decode=True))
    statuses = [line.get("status", "") for line in lines]
    assert "Pulling fs layer" in statuses or "Already exists" in statuses
    downloading = [line for line in lines if line.get("status") == "Downloading"]
    for line in downloading:
        assert line["progressDetail"]["total"] > 0 and "id" in line
    assert statuses[-1].startswith("Status: ")
    client.images.remove(seeded)


def test_pull_errors(engine: Engine, registry: Registry) -> None:
    missing = engine.docker("pull", f"{registry.address}/seed/busybox:nope", check=False)
    assert missing.returncode != 0
    assert b"not found" in missing.stderr
    client = engine.client()
    response = client.api._post(client.api._url("/images/create"),
                                params={"fromImage": "UPPER", "tag": "case"})
    assert response.status_code == 400
    assert "invalid reference format" in response.json()["message"]
    bad_platform = client.api._post(client.api._url("/images/create"),
                                    params={"fromImage": "busybox", "platform": "linux"})
    assert bad_platform.status_code == 400


def test_push_is_read_back_by_skopeo(engine: Engine, busybox: str, registry: Registry,
                                     tmp_path: Path) -> None:
    target = f"{registry.address}/pushed/app:v1"
    engine.docker("tag", busybox, target)
    out = engine.docker("push", target).stdout.decode()
    assert f"The push refers to repository [{registry.address}/pushed/app]" in out
    assert "Pushed" in out
    assert "v1: digest: sha256:" in out
    again = engine.docker("push", target).stdout.decode()
    assert "Layer already exists" in again
    copied = tmp_path / "copied.tar"
    skopeo_copy(f"docker://{target}", f"docker-archive:{copied}:copied:1")
    with tarfile.open(copied) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        config = json.loads(tar.extractfile(manifest["Config"]).read())
        layer = tar.extractfile(manifest["Layers"][0]).read()
    local = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]
    assert config["rootfs"]["diff_ids"] == local["RootFS"]["Layers"]
    assert "sha256:" + hashlib.sha256(layer).hexdigest() == local["RootFS"]["Layers"][0]
    pushed = json.loads(engine.docker("image", "inspect", target).stdout)[0]
    assert any(d.startswith(f"{registry.address}/pushed/app@sha256:")
               for d in pushed["RepoDigests"])
    engine.docker("rmi", target)


def test_corrupt_blob_leaves_nothing(engine: Engine, registry: Registry,
                                     tmp_path: Path) -> None:
    archive = tmp_path / "corrupt.tar"
    archive.write_bytes(image_archive([b"\0" * 1024 + b"x" * 0], ["corrupt:1"],
                                      {"Labels": {"corrupt": "yes"}}, compress=True))
    name = f"{registry.address}/corrupt/img:1"
    skopeo_copy(f"docker-archive:{archive}", f"docker://{name}")
    manifest = httpx.get(f"http://{registry.address}/v2/corrupt/img/manifests/1",
                         headers={"Accept": "application/vnd.docker.distribution."
                                            "manifest.v2+json"}).json()
    layer_digest = manifest["layers"][0]["digest"].removeprefix("sha256:")
    blob = next((registry.root / "storage").rglob(f"blobs/sha256/*/{layer_digest}/data"))
    blob.write_bytes(b"garbage" + blob.read_bytes()[7:])
    before = set((engine.data_root / "image" / "blobs" / "sha256").iterdir())
    result = engine.docker("pull", name, check=False)
    assert result.returncode != 0
    assert b"verification failed" in result.stderr
    assert engine.docker("images", "-q", "--filter", "label=corrupt=yes").stdout.strip() == b""
    after = set((engine.data_root / "image" / "blobs" / "sha256").iterdir())
    assert after == before
    tmp = engine.data_root / "image" / "tmp"
    assert list(tmp.iterdir()) == []


def test_index_platform_pick_and_distribution_inspect(engine: Engine, registry: Registry,
                                                      busybox_tar: Path) -> None:
    skopeo_copy(f"docker-archive:{busybox_tar}", f"docker://{registry.address}/seed/multi:base")
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    base = httpx.get(f"http://{registry.address}/v2/seed/multi/manifests/base", headers=accept)
    descriptor = {"mediaType": base.headers["Content-Type"],
                  "digest": base.headers["Docker-Content-Digest"], "size": len(base.content)}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{**descriptor, "platform": {"os": "linux", "architecture": "arm64",
                                                       "variant": "v8"}},
                           {**descriptor, "platform": {"os": "linux",
                                                       "architecture": "amd64"}}]}
    put = httpx.put(f"http://{registry.address}/v2/seed/multi/manifests/1",
                    content=json.dumps(index),
                    headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert put.status_code == 201, put.text
    name = f"{registry.address}/seed/multi:1"
    data = engine.client().images.get_registry_data(name)
    assert len(data.attrs["Platforms"]) == 2
    assert data.attrs["Descriptor"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    refused = engine.docker("pull", "--platform", "linux/s390x", name, check=False)
    assert refused.returncode != 0
    assert b"no matching manifest for linux/s390x in the manifest list entries" in refused.stderr
    out = engine.docker("pull", name).stdout.decode()
    assert "Digest: " + put.headers["Docker-Content-Digest"] in out
    wrong = engine.docker("pull", "--platform", "linux/arm64",
                          f"{registry.address}/seed/multi:base", check=False)
    assert b"does not provide the specified platform (linux/arm64)" in wrong.stderr
    engine.docker("rmi", name)


def test_ctl_image(engine: Engine, seeded: str) -> None:
    def ctl(*args: str) -> str:
        result = subprocess.run([*BERTH, "ctl", "--exec-root", str(engine.exec_root), "image",
                                 *args], capture_output=True, text=True, timeout=120,
                                cwd=REPO)
        assert result.returncode == 0, result.stderr
        return result.stdout

    pulled = ctl("pull", seeded)
    assert "Pull complete" in pulled or "Already exists" in pulled
    assert seeded in ctl("ls")
    assert seeded in json.loads(ctl("inspect", seeded))["repoTags"]
    assert f"Untagged: {seeded}" in ctl("rm", seeded)


def test_cross_repo_mount_and_chunked_upload(engine: Engine, registry: Registry,
                                             seeded: str, tmp_path: Path) -> None:
    engine.docker("pull", seeded)
    mounted = f"{registry.address}/elsewhere/app:1"
    engine.docker("tag", seeded, mounted)
    out = engine.docker("push", mounted).stdout.decode()
    assert "Mounted from " in out

    big = tmp_path / "big.tar"
    big.write_bytes(image_archive([file_layer(os.urandom(18 << 20))], ["big:1"]))
    engine.docker("load", "-i", str(big))
    target = f"{registry.address}/big/app:1"
    engine.docker("tag", "big:1", target)
    assert "Pushed" in engine.docker("push", target).stdout.decode()
    copied = tmp_path / "copied.tar"
    skopeo_copy(f"docker://{target}", f"docker-archive:{copied}:copied:1")
    local = json.loads(engine.docker("image", "inspect", target).stdout)[0]
    with tarfile.open(copied) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        config = json.loads(tar.extractfile(manifest["Config"]).read())
    assert config["rootfs"]["diff_ids"] == local["RootFS"]["Layers"]
    engine.docker("rmi", seeded, mounted, "big:1", target)


def test_zstd_layers_and_metrics(engine: Engine, registry: Registry, tmp_path: Path) -> None:
    archive = tmp_path / "z.tar"
    archive.write_bytes(image_archive([file_layer(b"zstd layer " * 1000)], ["z:1"],
                                      {"Labels": {"zstd": "yes"}}))
    name = f"{registry.address}/zstd/img:1"
    subprocess.run([SKOPEO, "copy", "--quiet", "--dest-tls-verify=false", "--format", "oci",
                    "--dest-compress-format", "zstd", f"docker-archive:{archive}",
                    f"docker://{name}"], check=True, capture_output=True, timeout=120)
    manifest = httpx.get(f"http://{registry.address}/v2/zstd/img/manifests/1",
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert manifest["layers"][0]["mediaType"].endswith("+zstd")
    engine.docker("pull", name)
    info = json.loads(engine.docker("image", "inspect", name).stdout)[0]
    assert info["Config"]["Labels"] == {"zstd": "yes"}
    repushed = f"{registry.address}/zstd/repushed:1"
    engine.docker("tag", name, repushed)
    engine.docker("push", repushed)
    copied = tmp_path / "copied.tar"
    skopeo_copy(f"docker://{repushed}", f"docker-archive:{copied}:copied:1")
    with tarfile.open(copied) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        config = json.loads(tar.extractfile(manifest["Config"]).read())
    assert config["rootfs"]["diff_ids"] == info["RootFS"]["Layers"]
    engine.docker("rmi", repushed)

    channel = grpc.insecure_channel(f"unix://{engine.exec_root / 'image.sock'}")
    service = types_pb2_grpc.InfoStub(channel).GetServiceInfo(types_pb2.GetServiceInfoRequest())
    assert service.object_counts["images"] >= 1
    metrics = httpx.get(service.metrics_url).text
    for metric in ("berth_image_images ", "berth_image_layer_bytes ",
                   "berth_image_pulled_bytes_total ", "berth_image_pull_seconds_count "):
        assert metric in metrics
    engine.docker("rmi", name)


def test_push_aux_and_registry_events(engine: Engine, busybox: str, registry: Registry) -> None:
    since = str(int(time.time()) - 1)
    target = f"{registry.address}/aux/app"
    engine.docker("tag", busybox, f"{target}:v2")
    lines = list(engine.client().api.push(target, tag="v2", stream=True, decode=True))
    pushing = [line for line in lines if line.get("status") == "Pushing"]
    assert all(p["progressDetail"]["total"] > 0 for p in pushing)
    aux = [line["aux"] for line in lines if "aux" in line]
    assert aux and aux[0]["Tag"] == "v2" and aux[0]["Digest"].startswith("sha256:")
    assert aux[0]["Size"] > 0
    engine.docker("rmi", f"{target}:v2")
    engine.docker("pull", f"{target}:v2")
    out = engine.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                        "--filter", "type=image", "--format", "{{json .}}").stdout
    events = {(e["Action"], e["Actor"]["ID"]) for e in map(json.loads, out.splitlines())}
    assert ("push", f"{target}:v2") in events and ("pull", f"{target}:v2") in events


def test_import_from_url(engine: Engine, registry: Registry, seeded: str) -> None:
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    manifest = httpx.get(f"http://{registry.address}/v2/seed/busybox/manifests/1",
                         headers=accept).json()
    url = f"http://{registry.address}/v2/seed/busybox/blobs/{manifest['layers'][0]['digest']}"
    engine.docker("import", url, "fromurl:1")
    info = json.loads(engine.docker("image", "inspect", "fromurl:1").stdout)[0]
    assert info["Comment"] == f"Imported from {url}"
    config = httpx.get(f"http://{registry.address}/v2/seed/busybox/blobs/"
                       f"{manifest['config']['digest']}").json()
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    missing = engine.docker("import", f"http://{registry.address}/nope", "x:1", check=False)
    assert missing.returncode != 0 and b"404" in missing.stderr
    engine.docker("rmi", "fromurl:1")


def test_parallel_pulls_unpack_once(engine: Engine, registry: Registry, tmp_path: Path) -> None:
    archive = tmp_path / "p.tar"
    archive.write_bytes(image_archive([file_layer(os.urandom(4 << 20)), file_layer(b"top")],
                                      ["p:1"], compress=True))
    names = [f"{registry.address}/parallel/{repo}:1" for repo in ("a", "b", "c")]
    for name in names:
        skopeo_copy(f"docker-archive:{archive}", f"docker://{name}")
    layers_root = engine.data_root / "image" / "layers"
    before = {p.name for p in layers_root.iterdir()}
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda n: engine.docker("pull", n, check=False), names))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    new = {p.name for p in layers_root.iterdir()} - before
    assert len(new) == 2, new
    ids = {json.loads(engine.docker("image", "inspect", n).stdout)[0]["Id"] for n in names}
    assert len(ids) == 1
    engine.docker("rmi", *names)
    assert {p.name for p in layers_root.iterdir() if not p.name.startswith(".")} <= before


def test_run_pulled_image(engine: Engine, seeded: str) -> None:
    engine.docker("pull", seeded)
    out = engine.docker("run", "--rm", seeded, "sh", "-c", "echo pulled-ok; cat /etc/group")
    assert out.stdout.startswith(b"pulled-ok\nroot:x:0:")
    engine.docker("rmi", seeded)


def test_pull_all_tags(engine: Engine, registry: Registry, busybox_tar: Path) -> None:
    for tag in ("one", "two"):
        skopeo_copy(f"docker-archive:{busybox_tar}", f"docker://{registry.address}/alltags/bb:{tag}")
    repo = f"{registry.address}/alltags/bb"
    out = engine.docker("pull", "--all-tags", repo).stdout.decode()
    assert "one: Pulling from alltags/bb" in out and "two: Pulling from alltags/bb" in out
    assert f"Status: Downloaded newer image for {repo}" in out
    tags = engine.docker("images", "--format", "{{.Tag}}", repo).stdout.split()
    assert sorted(tags) == [b"one", b"two"]
    engine.docker("rmi", f"{repo}:one", f"{repo}:two")
