"""Platform selectors on local images through the docker CLI and the SDK,
as a dockerd with one platform per image answers them: the image's own
platform acts, another one is refused with Docker's message (load skips
it), and `docker images --tree` shows each image's platform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.engine import Engine

OTHER = "linux/arm64"
MISMATCH = ("was found but its platform (linux/amd64) does not match the specified platform "
            "(linux/arm64)")


@pytest.fixture(autouse=True)
def amd64_only(engine: Engine, busybox: str) -> None:
    architecture = engine.docker("image", "inspect", "-f", "{{.Architecture}}", busybox)
    if architecture.stdout.decode().strip() != "amd64":
        pytest.skip("the test image is not amd64")


def refused(engine: Engine, *args: str) -> str:
    result = engine.docker(*args, check=False)
    assert result.returncode != 0, result.stdout
    return result.stderr.decode()


def test_inspect_and_history_act_or_refuse(engine: Engine, busybox: str) -> None:
    assert engine.docker("image", "inspect", "--platform", "linux/amd64", "-f",
                         "{{.Os}}/{{.Architecture}}", busybox).stdout == b"linux/amd64\n"
    assert f"image with reference {busybox} {MISMATCH}" in refused(
        engine, "image", "inspect", "--platform", OTHER, busybox)
    assert engine.docker("history", "--platform", "linux/amd64", "-q", busybox).stdout
    assert MISMATCH in refused(engine, "history", "--platform", OTHER, busybox)
    api = engine.client().api
    amd64 = '{"os":"linux","architecture":"amd64"}'
    conflict = api._get(api._url("/images/{0}/json", busybox),
                        params={"manifests": "1", "platform": amd64})
    assert conflict.status_code == 400
    assert "manifests and platform options cannot both be set" in conflict.json()["message"]
    partial = api._get(api._url("/images/{0}/history", busybox),
                       params={"platform": '{"variant":"v8"}'})
    assert partial.status_code == 400
    assert partial.json()["message"] == ("optional platform fields provided, but OS and "
                                         "Architecture are missing")


def test_save_load_and_rmi_with_a_platform(engine: Engine, busybox: str,
                                            tmp_path: Path) -> None:
    engine.docker("tag", busybox, "plat:one")
    archive = tmp_path / "one.tar"
    assert "no suitable export target found for platform linux/arm64" in refused(
        engine, "save", "--platform", OTHER, "-o", str(archive), "plat:one")
    engine.docker("save", "--platform", "linux/amd64", "-o", str(archive), "plat:one")

    assert MISMATCH in refused(engine, "rmi", "--platform", OTHER, "plat:one")
    assert engine.docker("images", "-q", "plat:one").stdout.strip()
    engine.docker("rmi", "--platform", "linux/amd64", "plat:one")
    assert not engine.docker("images", "-q", "plat:one").stdout.strip()

    skipped = engine.docker("load", "--platform", OTHER, "-i", str(archive))
    assert b"Loaded image" not in skipped.stdout
    assert not engine.docker("images", "-q", "plat:one").stdout.strip()
    loaded = engine.docker("load", "--platform", "linux/amd64", "-i", str(archive))
    assert b"Loaded image: plat:one" in loaded.stdout
    engine.docker("rmi", "plat:one")


def test_push_with_another_platform_is_refused(engine: Engine, busybox: str) -> None:
    engine.docker("tag", busybox, "127.0.0.1:1/plat:push")
    try:
        assert MISMATCH in refused(engine, "push", "--platform", OTHER, "127.0.0.1:1/plat:push")
    finally:
        engine.docker("rmi", "127.0.0.1:1/plat:push")


def test_images_report_manifests_for_the_tree(engine: Engine, busybox: str) -> None:
    engine.docker("create", "--name", "tree-user", busybox, "true")
    try:
        api = engine.client().api
        listed = api._result(api._get(api._url("/images/json"), params={"manifests": "1"}),
                             True)
        image = next(i for i in listed if f"{busybox}" in i["RepoTags"])
        (manifest,) = image["Manifests"]
        assert manifest["Kind"] == "image" and manifest["Available"] is True
        assert manifest["ImageData"]["Platform"] == {"architecture": "amd64", "os": "linux"}
        cid = engine.docker("inspect", "-f", "{{.Id}}", "tree-user").stdout.decode().strip()
        assert manifest["ImageData"]["Containers"] == [cid]
        plain = api._result(api._get(api._url("/images/json")), True)
        assert all("Manifests" not in i for i in plain)
        tree = engine.docker("images", "--tree").stdout.decode()
        assert "linux/amd64" in tree and busybox in tree
        inspected = json.loads(engine.docker("image", "inspect", busybox).stdout)[0]
        assert "Manifests" not in inspected
    finally:
        engine.docker("rm", "tree-user")
