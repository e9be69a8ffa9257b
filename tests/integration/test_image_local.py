"""Local image operations through the real docker CLI and SDK: load, images,
inspect, tag, rmi, and the rootfs leases the container service takes."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import grpc
import pytest

from berth.image.v1 import image_pb2, image_pb2_grpc
from tests.support.engine import Engine, running_engine
from tests.support.images import busybox_rootfs_tar, image_archive


def image_stub(engine: Engine) -> image_pb2_grpc.ImageServiceStub:
    channel = grpc.insecure_channel(f"unix://{engine.exec_root / 'image.sock'}")
    return image_pb2_grpc.ImageServiceStub(channel)


def layer(files: dict[str, bytes | None]) -> bytes:
    """A layer tar; a None value makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_load_lists_and_inspects(engine: Engine, busybox: str) -> None:
    listed = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert b"busybox:latest" in listed
    data = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]
    assert data["Id"].startswith("sha256:")
    assert data["RepoTags"] == ["busybox:latest"]
    assert data["Config"]["Cmd"] == ["sh"]
    assert data["RootFS"]["Type"] == "layers" and len(data["RootFS"]["Layers"]) == 1
    assert data["Os"] == "linux" and data["Architecture"] == "amd64"
    assert data["Size"] > 1_000_000
    short = data["Id"].removeprefix("sha256:")[:12]
    by_id = json.loads(engine.docker("image", "inspect", short).stdout)[0]
    assert by_id["Id"] == data["Id"]
    assert engine.client().images.get(busybox).id == data["Id"]


def test_load_output_and_reload(engine: Engine, busybox_tar: Path) -> None:
    out = engine.docker("load", "-i", str(busybox_tar)).stdout
    assert b"Loaded image: busybox:latest" in out
    quiet = engine.docker("load", "-q", "-i", str(busybox_tar)).stdout
    assert quiet.strip() == b"Loaded image: busybox:latest"


def test_tag_and_rmi(engine: Engine, busybox: str) -> None:
    engine.docker("tag", busybox, "example.com/team/app:v1")
    engine.docker("tag", busybox, "other")
    tags = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]["RepoTags"]
    assert set(tags) == {"busybox:latest", "example.com/team/app:v1", "other:latest"}
    out = engine.docker("rmi", "example.com/team/app:v1").stdout.decode()
    assert "Untagged: example.com/team/app:v1" in out and "Deleted" not in out
    engine.docker("rmi", "other")
    missing = engine.docker("image", "inspect", "other", check=False)
    assert missing.returncode != 0 and b"No such image: other" in missing.stderr


def test_bad_references(engine: Engine, busybox: str) -> None:
    bad = engine.docker("tag", busybox, "UPPER:case", check=False)
    assert bad.returncode != 0 and b"invalid reference format" in bad.stderr
    client = engine.client()
    response = client.api._post(client.api._url(f"/images/{busybox}/tag"),
                                params={"repo": "UPPER", "tag": "case"})
    assert response.status_code == 400
    assert "invalid reference format" in response.json()["message"]


def test_rmi_unknown(engine: Engine) -> None:
    result = engine.docker("rmi", "nosuchimage:1", check=False)
    assert result.returncode != 0
    assert b"No such image: nosuchimage:1" in result.stderr


def test_whiteouts_and_layer_sharing(engine: Engine, tmp_path: Path) -> None:
    base = busybox_rootfs_tar()
    top = layer({"etc/": None, "etc/.wh.group": b"", "var/": None,
                 "var/.wh..wh..opq": b"", "var/new": b"hello"})
    archive = tmp_path / "layered.tar"
    archive.write_bytes(image_archive([base, top], ["layered:1"], {"Labels": {"a": "b"}}))
    engine.docker("load", "-i", str(archive))
    stub = image_stub(engine)
    rootfs = stub.AcquireRootfs(image_pb2.AcquireRootfsRequest(image="layered:1",
                                                               holder="c" * 64))
    try:
        assert len(rootfs.lower_dirs) == 2
        top_dir, base_dir = (Path(d) for d in rootfs.lower_dirs)
        whiteout = os.lstat(top_dir / "etc" / "group")
        assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
        assert os.getxattr(top_dir / "var", "trusted.overlay.opaque") == b"y"
        assert (top_dir / "var" / "new").read_bytes() == b"hello"
        assert (base_dir / "bin" / "busybox").exists()
        assert rootfs.image.config.labels["a"] == "b"
        busybox_dirs = stub.AcquireRootfs(image_pb2.AcquireRootfsRequest(
            image="busybox:latest", holder="d" * 64)).lower_dirs
        assert busybox_dirs == [str(base_dir)]
        stub.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder="d" * 64))

        refused = engine.docker("rmi", "layered:1", check=False)
        assert refused.returncode != 0
        assert (b'conflict: unable to remove repository reference "layered:1" (must force) '
                b"- container cccccccccccc is using its referenced image") in refused.stderr
        engine.docker("rmi", "-f", "layered:1")
        assert top_dir.exists(), "layers stay while the lease lasts"
    finally:
        stub.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder="c" * 64))
    assert not top_dir.exists()
    assert base_dir.exists(), "busybox still uses the base layer"


def test_escaping_layer_is_refused(engine: Engine, tmp_path: Path) -> None:
    evil = layer({"../../escaped": b"x"})
    archive = tmp_path / "evil.tar"
    archive.write_bytes(image_archive([evil], ["evil:1"]))
    result = engine.docker("load", "-i", str(archive), check=False)
    assert result.returncode != 0
    assert b'entry "../../escaped" leads outside the layer' in result.stderr
    assert engine.docker("images", "-q", "evil").stdout.strip() == b""
    layers_root = engine.data_root / "image" / "layers"
    assert not [p for p in layers_root.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("compress", [True, False])
def test_dangling_and_filters(engine: Engine, tmp_path: Path, compress: bool) -> None:
    name = f"filtered{int(compress)}:1"
    archive = tmp_path / "f.tar"
    archive.write_bytes(image_archive([layer({"f": str(compress).encode()})], [name],
                                      {"Labels": {"kind": "filtered"}}, compress=compress))
    engine.docker("load", "-i", str(archive))
    ids = engine.docker("images", "-q", "--filter", "label=kind=filtered").stdout.split()
    assert len(ids) >= 1
    by_ref = engine.docker("images", "--format", "{{.Repository}}", "--filter",
                           f"reference={name.split(':')[0]}").stdout.split()
    assert by_ref == [name.split(":")[0].encode()]
    engine.docker("rmi", name)


def test_image_events(engine: Engine, busybox: str, busybox_tar: Path, tmp_path: Path) -> None:
    since = str(int(time.time()) - 1)
    engine.docker("tag", busybox, "evented:1")
    engine.docker("rmi", "evented:1")
    engine.docker("load", "-i", str(busybox_tar))
    engine.docker("save", "-o", str(tmp_path / "s.tar"), busybox)
    time.sleep(0.5)
    out = engine.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                        "--filter", "type=image", "--format", "{{json .}}").stdout
    events = [json.loads(line) for line in out.splitlines()]
    actions = [e["Action"] for e in events]
    for action in ("tag", "untag", "load", "save"):
        assert action in actions, actions
    assert any(e["Action"] == "tag" and e["Actor"]["Attributes"]["name"] == "evented:1"
               for e in events)


def test_state_survives_restart(busybox_tar: Path) -> None:
    with running_engine() as engine:
        engine.docker("load", "-i", str(busybox_tar))
        stub = image_stub(engine)
        stub.AcquireRootfs(image_pb2.AcquireRootfsRequest(image="busybox", holder="e" * 64))
        engine.stop()
        engine.start()
        info = json.loads(engine.docker("image", "inspect", "busybox").stdout)[0]
        assert info["RepoTags"] == ["busybox:latest"]
        refused = engine.docker("rmi", "busybox", check=False)
        assert b"container eeeeeeeeeeee is using its referenced image" in refused.stderr
        image_stub(engine).ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder="e" * 64))
        engine.docker("rmi", "busybox")
        layers_root = engine.data_root / "image" / "layers"
        deadline = time.monotonic() + 10
        while sorted(p.name for p in layers_root.iterdir()) != ["empty"]:
            assert time.monotonic() < deadline, list(layers_root.iterdir())
            time.sleep(0.1)
        blobs = engine.data_root / "image" / "blobs" / "sha256"
        assert list(blobs.iterdir()) == []


def test_rmi_by_id_rules(engine: Engine, tmp_path: Path) -> None:
    archive = tmp_path / "ids.tar"
    archive.write_bytes(image_archive([layer({"ids": b"1"})], ["idtest:1"]))
    engine.docker("load", "-i", str(archive))
    image_id = json.loads(engine.docker("image", "inspect", "idtest:1").stdout)[0]["Id"]
    short = image_id.removeprefix("sha256:")[:12]
    engine.docker("tag", "idtest:1", "idtest-other:1")
    refused = engine.docker("rmi", short, check=False)
    assert refused.returncode != 0
    assert (f"conflict: unable to delete {short} (must be forced) - image is referenced in "
            f"multiple repositories").encode() in refused.stderr
    out = engine.docker("rmi", "-f", short).stdout.decode()
    assert "Untagged: idtest:1" in out and "Untagged: idtest-other:1" in out
    assert f"Deleted: {image_id}" in out
    missing = engine.docker("rmi", short, check=False)
    assert f"No such image: {short}".encode() in missing.stderr


def test_whiteouts_seen_from_a_container(engine: Engine, tmp_path: Path) -> None:
    top = layer({"etc/": None, "etc/.wh.group": b"", "var/": None,
                 "var/.wh..wh..opq": b"", "var/only": b"x"})
    archive = tmp_path / "wh.tar"
    archive.write_bytes(image_archive([busybox_rootfs_tar(), top], ["whiteouts:1"]))
    engine.docker("load", "-i", str(archive))
    out = engine.docker("run", "--rm", "whiteouts:1", "sh", "-c",
                        "test -e /etc/group && echo group; test -e /etc/passwd && echo passwd; "
                        "ls /var").stdout
    assert out.split() == [b"passwd", b"only"]
    engine.docker("rmi", "whiteouts:1")


def test_a_running_containers_image_cannot_be_deleted_even_forced(engine: Engine,
                                                                   busybox: str) -> None:
    engine.docker("run", "--name", "inuse-src", busybox, "touch", "/marker")
    image = engine.docker("commit", "inuse-src", "inuse:1").stdout.decode().strip()
    short = image.removeprefix("sha256:")[:12]
    user = engine.docker("run", "-d", "--name", "inuse-user", "inuse:1", "sleep", "300")
    user_id = user.stdout.decode().strip()
    try:
        for args in (["rmi", short], ["rmi", "-f", short]):
            refused = engine.docker(*args, check=False)
            assert refused.returncode != 0
            assert (f"conflict: unable to delete {short} (cannot be forced) - image is being "
                    f"used by running container {user_id[:12]}") in refused.stderr.decode()
        untagged = engine.docker("rmi", "-f", "inuse:1").stdout.decode()
        assert untagged.strip() == "Untagged: inuse:1"
        assert engine.docker("image", "inspect", short, check=False).returncode == 0
        engine.docker("stop", "-t", "0", "inuse-user")
        deleted = engine.docker("rmi", "-f", short).stdout.decode()
        assert f"Deleted: {image}" in deleted
        engine.docker("rm", "inuse-user")   # its rootfs outlives the image, as in Docker
    finally:
        engine.docker("rm", "-f", "inuse-user", "inuse-src", check=False)


def test_rmi_of_the_last_tag_untags_whatever_keeps_the_image(engine: Engine,
                                                             busybox: str) -> None:
    """As dockerd: once the tag is gone the conflict rules only decide whether
    the image goes too, so rmi of a tag never fails after untagging."""
    engine.docker("run", "--name", "lasttag-src", busybox, "touch", "/marker")
    parent = engine.docker("commit", "lasttag-src", "lasttag-parent:1").stdout.decode().strip()
    engine.docker("create", "--name", "lasttag-child-src", "lasttag-parent:1", "true")
    child = engine.docker("commit", "lasttag-child-src", "lasttag-child:1").stdout.decode().strip()
    engine.docker("rm", "lasttag-src", "lasttag-child-src")
    short = parent.removeprefix("sha256:")[:12]

    def tags(image: str) -> list[str]:
        return json.loads(engine.docker("image", "inspect", image).stdout)[0]["RepoTags"]

    try:
        for args in (["rmi", "lasttag-parent:1"], ["rmi", "-f", "lasttag-parent:1"]):
            assert engine.docker(*args).stdout.decode() == "Untagged: lasttag-parent:1\n"
            assert tags(parent) == [], "the parent of an image stays, untagged"
            engine.docker("tag", parent, "lasttag-parent:1")
        refused = engine.docker("rmi", "-f", short, check=False)
        assert (f"conflict: unable to delete {short} (cannot be forced) - image has dependent "
                f"child images") in refused.stderr.decode()

        user = engine.docker("create", "--name", "lasttag-user", "lasttag-parent:1",
                             "true").stdout.decode().strip()
        refused = engine.docker("rmi", "lasttag-parent:1", check=False)
        assert (f'conflict: unable to remove repository reference "lasttag-parent:1" (must '
                f"force) - container {user[:12]} is using its referenced image "
                f"{short}") in refused.stderr.decode()
        forced = engine.docker("rmi", "-f", "lasttag-parent:1").stdout.decode()
        assert forced == "Untagged: lasttag-parent:1\n"
        assert tags(parent) == []

        child_user = engine.docker("create", "--name", "lasttag-child-user", "lasttag-child:1",
                                   "true").stdout.decode().strip()
        engine.docker("tag", "lasttag-child:1", "lasttag-child:2")
        assert engine.docker("rmi", "lasttag-child:1").stdout.decode() == \
            "Untagged: lasttag-child:1\n"
        refused = engine.docker("rmi", "lasttag-child:2", check=False)
        assert (f'conflict: unable to remove repository reference "lasttag-child:2" (must '
                f"force) - container {child_user[:12]} is using its referenced image "
                f"{child.removeprefix('sha256:')[:12]}") in refused.stderr.decode()
        forced = engine.docker("rmi", "-f", "lasttag-child:2").stdout.decode()
        assert forced == f"Untagged: lasttag-child:2\nDeleted: {child}\n"
        assert tags(parent) == [], "a stopped container keeps the parent from the prune"
    finally:
        engine.docker("rm", "-f", "lasttag-user", "lasttag-child-user", check=False)
        engine.docker("rmi", "-f", child, check=False)
        engine.docker("rmi", "-f", parent, check=False)


def test_containers_count_only_the_containers_leases(engine: Engine, tmp_path: Path) -> None:
    """Docker counts the containers made from an image; a build's holds and
    CRI image volumes are no containers, though they keep the image in use."""
    archive = tmp_path / "counted.tar"
    archive.write_bytes(image_archive([layer({"counted": b"1"})], ["counted:1"]))
    engine.docker("load", "-i", str(archive))
    stub = image_stub(engine)

    def counts() -> set[tuple[int, int]]:
        inspected = stub.Inspect(image_pb2.InspectImageRequest(name="counted:1"))
        listed = next(i for i in stub.List(image_pb2.ListImagesRequest()).images
                      if i.id == inspected.id)
        return {(inspected.containers, inspected.holds), (listed.containers, listed.holds)}

    leases = {"build-counted-1": "build", "cri-image-volume-counted-0": "cri",
              "e" * 64: "container"}
    try:
        for holder, owner in leases.items():
            stub.AcquireRootfs(image_pb2.AcquireRootfsRequest(image="counted:1", holder=holder,
                                                              owner=owner))
        assert counts() == {(1, 3)}
    finally:
        for holder in leases:
            stub.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(holder=holder))
    assert counts() == {(0, 0)}
    engine.docker("rmi", "counted:1")
