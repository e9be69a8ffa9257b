"""docker save/load round trips, docker import, history, prune, and the
CommitLayer RPC the build and commit paths use."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import grpc

from berth.image.v1 import image_pb2, image_pb2_grpc
from tests.support.engine import Engine
from tests.support.images import files_tar, image_archive


def image_stub(engine: Engine) -> image_pb2_grpc.ImageServiceStub:
    channel = grpc.insecure_channel(f"unix://{engine.exec_root / 'image.sock'}")
    return image_pb2_grpc.ImageServiceStub(channel)


def commit(stub: image_pb2_grpc.ImageServiceStub, options: image_pb2.CommitLayerOptions,
           data: bytes = b"") -> str:
    messages = [image_pb2.CommitLayerRequest(options=options)]
    if data:
        messages.append(image_pb2.CommitLayerRequest(data=data))
    return stub.CommitLayer(iter(messages)).id


def test_save_and_load_round_trip(engine: Engine, busybox: str, tmp_path: Path) -> None:
    original = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]
    saved = tmp_path / "saved.tar"
    engine.docker("save", "-o", str(saved), busybox)
    with tarfile.open(saved) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
        index = json.loads(tar.extractfile("index.json").read())
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= names
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert (index["manifests"][0]["annotations"]["io.containerd.image.name"]
            == "docker.io/library/busybox:latest")
    engine.docker("rmi", busybox)
    compressed = tmp_path / "saved.tar.gz"
    compressed.write_bytes(gzip.compress(saved.read_bytes(), compresslevel=1))
    out = engine.docker("load", "-i", str(compressed)).stdout
    assert b"Loaded image: busybox:latest" in out
    assert json.loads(engine.docker("image", "inspect", busybox).stdout)[0]["Id"] == original["Id"]


def test_save_by_sdk_streams_a_tar(engine: Engine, busybox: str) -> None:
    data = b"".join(engine.client().images.get(busybox).save())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "manifest.json" in tar.getnames()


def test_import_with_changes(engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "rootfs.tar.gz"
    source.write_bytes(gzip.compress(files_tar({"hello.txt": b"hi"})))
    out = engine.docker("import", "-c", "CMD [\"/bin/sh\"]", "-c", "ENV A=b",
                        "-c", "WORKDIR /work", "-c", "LABEL team=x", "-c", "EXPOSE 8080",
                        "-m", "my import", str(source), "imported:1").stdout
    assert out.strip().startswith(b"sha256:")
    data = json.loads(engine.docker("image", "inspect", "imported:1").stdout)[0]
    assert data["Config"]["Cmd"] == ["/bin/sh"]
    assert data["Config"]["Env"] == ["A=b"]
    assert data["Config"]["WorkingDir"] == "/work"
    assert data["Config"]["Labels"] == {"team": "x"}
    assert "8080/tcp" in data["Config"]["ExposedPorts"]
    assert data["Comment"] == "my import"
    history = json.loads(engine.docker("history", "--format", "{{json .}}", "--no-trunc",
                                       "imported:1").stdout.splitlines()[0])
    assert history["Comment"] == "my import"
    engine.docker("rmi", "imported:1")


def test_commit_layer_history_and_prune(engine: Engine, busybox: str, tmp_path: Path) -> None:
    stub = image_stub(engine)
    base_id = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]["Id"]
    config = image_pb2.ImageConfig(env=["PATH=/bin"], working_dir="/srv")
    config.cmd.values.extend(["sh"])
    child = commit(stub, image_pb2.CommitLayerOptions(
        parent=base_id, config=config, created_by="RUN echo hi > /srv/hi"),
        files_tar({"srv/hi": b"hi\n"}))
    meta = commit(stub, image_pb2.CommitLayerOptions(
        parent=child, config=config, created_by="CMD [\"sh\"]", empty_layer=True,
        tags=["built:1"]))
    data = json.loads(engine.docker("image", "inspect", "built:1").stdout)[0]
    assert data["Id"] == meta and data["Parent"] == child
    assert len(data["RootFS"]["Layers"]) == 2
    assert data["Config"]["WorkingDir"] == "/srv"
    rows = [json.loads(line) for line in engine.docker(
        "history", "--format", "{{json .}}", "--no-trunc", "built:1").stdout.splitlines()]
    assert [r["CreatedBy"] for r in rows[:2]] == ["CMD [\"sh\"]", "RUN echo hi > /srv/hi"]
    assert rows[0]["ID"] == meta and rows[1]["ID"] == child

    refused = engine.docker("rmi", child, check=False)
    assert b"image has dependent child images" in refused.stderr
    # Untagging the top image makes both dangling; prune removes the chain.
    engine.docker("tag", "built:1", "keep:1")
    engine.docker("rmi", "built:1")
    assert engine.docker("image", "inspect", "keep:1").returncode == 0
    engine.docker("rmi", "keep:1")
    assert engine.docker("image", "inspect", child, check=False).returncode != 0

    orphan = commit(stub, image_pb2.CommitLayerOptions(parent=base_id, config=config),
                    files_tar({"x": b"y"}))
    pruned = engine.client().images.prune()
    assert any(item.get("Deleted") == orphan for item in pruned["ImagesDeleted"])
    assert pruned["SpaceReclaimed"] == 1
    assert engine.docker("image", "inspect", busybox).returncode == 0


def test_oci_layout_load(engine: Engine, tmp_path: Path) -> None:
    archive = tmp_path / "docker.tar"
    archive.write_bytes(image_archive([files_tar({"oci": b"1"})], ["ocisrc:1"]))
    engine.docker("load", "-i", str(archive))
    saved = tmp_path / "saved.tar"
    engine.docker("save", "-o", str(saved), "ocisrc:1")
    engine.docker("rmi", "ocisrc:1")
    # Keep only the OCI layout part of the archive.
    oci_only = tmp_path / "oci.tar"
    with tarfile.open(saved) as src, tarfile.open(oci_only, "w") as dst:
        for member in src.getmembers():
            if member.name not in ("manifest.json", "repositories"):
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    out = engine.docker("load", "-i", str(oci_only)).stdout
    assert b"Loaded image: ocisrc:1" in out
    engine.docker("rmi", "ocisrc:1")


def test_list_and_prune_filters(engine: Engine, busybox: str) -> None:
    stub = image_stub(engine)
    base_id = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]["Id"]

    def labelled(value: str) -> str:
        config = image_pb2.ImageConfig(labels={"filtertest": value})
        return commit(stub, image_pb2.CommitLayerOptions(parent=base_id, config=config),
                      files_tar({value: value.encode()}))

    first, second = labelled("one"), labelled("two")
    client = engine.client()

    def ids(**filters: object) -> set[str]:
        return {i.id for i in client.images.list(filters=filters)}

    assert {first, second} <= ids(dangling=True)
    assert not {first, second} & ids(dangling=False)
    assert second in ids(since=first) and first not in ids(since=first)
    assert first in ids(before=second) and second not in ids(before=second)
    assert ids(label="filtertest=two") == {second}
    assert client.images.prune(filters={"until": "2000-01-01T00:00:00Z"})["ImagesDeleted"] \
        is None
    pruned = client.images.prune(filters={"label": "filtertest=two"})
    assert [i["Deleted"] for i in pruned["ImagesDeleted"] if "Deleted" in i][0] == second
    assert ids(label="filtertest") == {first}
    bad = engine.docker("images", "--filter", "nosuch=1", check=False)
    assert bad.returncode != 0 and b"invalid filter 'nosuch'" in bad.stderr
    client.images.remove(first)


def test_shared_size(engine: Engine, busybox: str) -> None:
    stub = image_stub(engine)
    base = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]
    child = commit(stub, image_pb2.CommitLayerOptions(parent=base["Id"],
                                                      config=image_pb2.ImageConfig()),
                   files_tar({"shared": b"12345"}))
    listed = {i.id: i for i in stub.List(image_pb2.ListImagesRequest(shared_size=True)).images}
    assert listed[base["Id"]].shared_size == base["Size"]
    assert listed[child].shared_size == base["Size"]
    assert listed[child].size == base["Size"] + 5
    assert stub.List(image_pb2.ListImagesRequest()).images[0].shared_size == -1
    engine.docker("rmi", child)
