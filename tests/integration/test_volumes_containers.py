"""Issue 7: volumes, binds and tmpfs mounted into real containers."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.engine import Engine


@pytest.fixture
def clean(engine: Engine, busybox: str) -> Iterator[str]:
    """busybox loaded; afterwards every container and volume of the test is gone."""
    yield busybox
    engine.clean()


def run(engine: Engine, *args: str) -> str:
    return engine.docker("run", "--rm", *args).stdout.decode()


def failure(engine: Engine, *args: str) -> str:
    result = engine.docker(*args, check=False)
    assert result.returncode != 0
    return result.stderr.decode()


def mounts_of(engine: Engine, container: str) -> dict[str, dict]:
    out = engine.docker("inspect", "--format", "{{json .Mounts}}", container).stdout
    return {m["Destination"]: m for m in json.loads(out)}


def volume_path(engine: Engine, name: str) -> Path:
    return engine.data_root / "volume" / "volumes" / name / "_data"


def test_data_outlives_the_container(engine: Engine, clean: str) -> None:
    engine.docker("run", "--name", "writer", "-v", "keep:/data", clean, "sh", "-c",
                  "echo persisted > /data/file")
    engine.docker("rm", "-v", "writer")
    assert run(engine, "-v", "keep:/data", clean, "cat", "/data/file") == "persisted\n"
    assert (volume_path(engine, "keep") / "file").read_text() == "persisted\n"


def test_running_containers_share_a_volume(engine: Engine, clean: str) -> None:
    first = engine.docker("run", "-d", "-v", "shared:/s", clean, "sleep", "60").stdout
    second = engine.docker("run", "-d", "-v", "shared:/s", clean, "sleep", "60").stdout
    first, second = first.decode().strip(), second.decode().strip()
    engine.docker("exec", first, "sh", "-c", "echo from-first > /s/a")
    assert engine.docker("exec", second, "cat", "/s/a").stdout == b"from-first\n"
    engine.docker("exec", second, "sh", "-c", "echo from-second > /s/b")
    assert engine.docker("exec", first, "cat", "/s/b").stdout == b"from-second\n"
    message = failure(engine, "volume", "rm", "shared")
    assert "remove shared: volume is in use - [" in message
    assert first in message and second in message
    engine.docker("rm", "-f", first, second)
    engine.docker("volume", "rm", "shared")


def test_read_only_volume_and_bind_refuse_writes(engine: Engine, clean: str,
                                                 tmp_path: Path) -> None:
    (tmp_path / "seen").write_text("host file")
    for spec in ("ro-vol:/m:ro", f"{tmp_path}:/m:ro"):
        result = engine.docker("run", "--rm", "-v", spec, clean, "sh", "-c", "echo x > /m/new",
                               check=False)
        assert result.returncode != 0
        assert b"Read-only file system" in result.stderr
    assert run(engine, "-v", f"{tmp_path}:/m:ro", clean, "cat", "/m/seen") == "host file"
    assert not (tmp_path / "new").exists()
    result = engine.docker("run", "--rm", "--mount", "type=volume,src=ro-vol,dst=/m,readonly",
                           clean, "touch", "/m/x", check=False)
    assert b"Read-only file system" in result.stderr


def test_bind_of_an_existing_file_and_of_a_missing_path(engine: Engine, clean: str,
                                                       tmp_path: Path) -> None:
    config = tmp_path / "app.conf"
    config.write_text("setting=1\n")
    assert run(engine, "-v", f"{config}:/etc/app.conf:ro", clean,
               "cat", "/etc/app.conf") == "setting=1\n"
    run(engine, "-v", f"{config}:/etc/app.conf", clean, "sh", "-c",
        "echo setting=2 > /etc/app.conf")
    assert config.read_text() == "setting=2\n"
    missing = tmp_path / "made" / "by-start"
    assert run(engine, "-v", f"{missing}:/m", clean, "sh", "-c", "echo x > /m/f; ls /m") == "f\n"
    assert missing.is_dir() and (missing / "f").read_text() == "x\n"


def test_tmpfs_size_limits_writes(engine: Engine, clean: str) -> None:
    write = "dd if=/dev/zero of=/t/f bs=1024 count=2048"
    for args in (["--mount", "type=tmpfs,dst=/t,tmpfs-size=1m"], ["--tmpfs", "/t:size=1m"]):
        result = engine.docker("run", "--rm", *args, clean, "sh", "-c", write, check=False)
        assert result.returncode != 0
        assert b"No space left on device" in result.stderr
    assert run(engine, "--mount", "type=tmpfs,dst=/t,tmpfs-size=4m", clean, "sh", "-c",
               f"{write} 2>/dev/null && echo ok") == "ok\n"


def test_image_content_is_copied_into_new_volumes(engine: Engine, clean: str) -> None:
    assert "root:x:0:0" in run(engine, "-v", "etc-copy:/etc", clean, "cat", "/etc/passwd")
    assert (volume_path(engine, "etc-copy") / "passwd").exists()
    (volume_path(engine, "etc-copy") / "passwd").write_text("changed\n")
    assert run(engine, "-v", "etc-copy:/etc", clean, "cat", "/etc/passwd") == "changed\n"
    # Only the engine's files, mounted over the volume (their mount points
    # land in it), as with dockerd.
    assert run(engine, "-v", "etc-empty:/etc:nocopy", clean, "ls", "-A", "/etc") == \
        "hostname\nhosts\nresolv.conf\n"
    engine.docker("create", "--name", "anon", "-v", "/etc", clean)
    source = mounts_of(engine, "anon")["/etc"]["Source"]
    engine.docker("start", "anon")
    assert (Path(source) / "group").exists()


def test_anonymous_volumes_go_with_rm_v_and_auto_remove(engine: Engine, clean: str) -> None:
    engine.docker("create", "--name", "both", "-v", "/anon", "-v", "named:/named", clean)
    anonymous = mounts_of(engine, "both")["/anon"]["Name"]
    assert len(anonymous) == 64
    engine.docker("rm", "-v", "both")
    names = engine.docker("volume", "ls", "-q").stdout.decode().split()
    assert names == ["named"]
    run(engine, "-v", "/auto", clean, "true")
    assert engine.docker("volume", "ls", "-q").stdout.split() == [b"named"]
    engine.docker("create", "--name", "kept", "-v", "/kept", clean)
    engine.docker("rm", "kept")
    assert len(engine.docker("volume", "ls", "-q").stdout.split()) == 2


def test_inspect_mounts_as_docker(engine: Engine, clean: str, tmp_path: Path) -> None:
    engine.docker("create", "--name", "shown", "-v", "vol:/v", "-v", f"{tmp_path}:/b:ro",
                  "--mount", "type=tmpfs,dst=/t", "--tmpfs", "/hidden", clean)
    mounts = mounts_of(engine, "shown")
    assert mounts["/v"] == {"Type": "volume", "Name": "vol",
                            "Source": str(volume_path(engine, "vol")), "Destination": "/v",
                            "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}
    assert mounts["/b"] == {"Type": "bind", "Source": str(tmp_path), "Destination": "/b",
                            "Mode": "ro", "RW": False, "Propagation": "rprivate"}
    assert mounts["/t"]["Type"] == "tmpfs"
    assert "/hidden" not in mounts


def test_missing_bind_source_is_created_for_v_only(engine: Engine, clean: str,
                                                   tmp_path: Path) -> None:
    missing = tmp_path / "made" / "here"
    run(engine, "-v", f"{missing}:/m", clean, "true")
    assert missing.is_dir()
    message = failure(engine, "run", "--rm", "--mount",
                      f"type=bind,src={tmp_path}/absent,dst=/m", clean, "true")
    assert (f'invalid mount config for type "bind": bind source path does not exist: '
            f'{tmp_path}/absent') in message


@pytest.mark.parametrize(("args", "message"), [
    (["-v", "/x:/"], "invalid volume specification: '/x:/': invalid mount config for type "
                     "\"bind\": invalid specification: destination can't be '/'"),
    (["-v", "vol:rel"], "invalid volume specification: 'vol:rel': invalid mount config for "
                        "type \"volume\": invalid mount path: 'rel' mount path must be absolute"),
    (["-v", "a/b:/x"], 'create a/b: "a/b" includes invalid characters for a local volume name'),
    (["--mount", "type=volume,dst=/x,readonly"],
     'invalid mount config for type "volume": must not set ReadOnly mode when using '
     'anonymous volumes'),
    (["-v", "one:/same", "-v", "two:/same"], "Duplicate mount point: /same"),
])
def test_bad_mounts_are_refused_and_nothing_is_left(engine: Engine, clean: str,
                                                     args: list[str], message: str) -> None:
    assert message in failure(engine, "run", "--rm", *args, clean, "true")
    assert engine.docker("ps", "-aq").stdout == b""
    assert engine.docker("volume", "ls", "-q").stdout == b""


def test_volumes_from_and_subpath(engine: Engine, clean: str) -> None:
    engine.docker("run", "--name", "source", "-v", "from-vol:/shared", clean, "sh", "-c",
                  "mkdir /shared/sub && echo inside > /shared/sub/f")
    assert run(engine, "--volumes-from", "source", clean, "cat", "/shared/sub/f") == "inside\n"
    result = engine.docker("run", "--rm", "--volumes-from", "source:ro", clean, "touch",
                           "/shared/x", check=False)
    assert b"Read-only file system" in result.stderr
    assert run(engine, "--mount", "type=volume,src=from-vol,dst=/only,volume-subpath=sub",
               clean, "cat", "/only/f") == "inside\n"
    body = json.dumps({"Image": clean, "HostConfig": {"VolumesFrom": ["ghost"]}})
    out = subprocess.run(["curl", "-sS", "--unix-socket", str(engine.socket), "-w", " %{http_code}",
                          "-XPOST", "-H", "Content-Type: application/json", "-d", body,
                          "http://d/containers/create"], capture_output=True, text=True,
                         timeout=30).stdout
    assert out == '{"message": "No such container: ghost"} 400'


def test_tmpfs_volume_options_reach_the_container(engine: Engine, clean: str) -> None:
    engine.docker("volume", "create", "--driver", "local", "-o", "type=tmpfs", "-o",
                  "device=tmpfs", "-o", "o=size=2m", "small")
    out = run(engine, "-v", "small:/s", clean, "df", "-k", "/s")
    assert out.splitlines()[1].split()[1] == "2048"
    assert not os.path.ismount(volume_path(engine, "small"))
    engine.docker("volume", "rm", "small")


def test_image_volume_is_an_anonymous_volume_with_the_image_content(engine: Engine,
                                                                   clean: str) -> None:
    engine.docker("run", "--name", "baker", clean, "sh", "-c",
                  "mkdir /vol && echo baked > /vol/file && chown 33:33 /vol")
    engine.docker("commit", "--change", "VOLUME /vol", "baker", "with-volume:1")
    engine.docker("rm", "baker")
    try:
        engine.docker("create", "--name", "user", "with-volume:1", "cat", "/vol/file")
        mount = mounts_of(engine, "user")["/vol"]
        assert (mount["Type"], mount["Mode"], len(mount["Name"])) == ("volume", "", 64)
        assert engine.docker("start", "-a", "user").stdout == b"baked\n"
        assert Path(mount["Source"]).stat().st_uid == 33
        engine.docker("rm", "-v", "user")
        assert engine.docker("volume", "ls", "-q").stdout == b""
        engine.docker("run", "--name", "data", "with-volume:1", "sh", "-c",
                      "echo shared > /vol/new")
        assert run(engine, "--volumes-from", "data", "with-volume:1", "cat",
                   "/vol/new") == "shared\n"
        engine.docker("rm", "-v", "data")
        assert engine.docker("volume", "ls", "-q").stdout == b""
    finally:
        engine.docker("rmi", "with-volume:1", check=False)


def test_system_df_reports_volume_sizes(engine: Engine, clean: str) -> None:
    run(engine, "-v", "sized:/d", clean, "dd", "if=/dev/zero", "of=/d/f", "bs=1024",
        "count=100")
    engine.docker("create", "--name", "holder", "-v", "sized:/d", clean)
    out = engine.docker("system", "df", "-v", "--format", "{{json .Volumes}}").stdout
    volumes = {v["Name"]: v for v in json.loads(out)}
    assert volumes["sized"]["Size"] == "102.4kB"
    assert volumes["sized"]["Links"] == "1"


@pytest.fixture
def source_with_submount(tmp_path: Path) -> Iterator[Path]:
    """A bind source with a tmpfs mounted below it, at sub/."""
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(source / "sub")],
                   check=True)
    yield source
    subprocess.run(["umount", str(source / "sub")], check=True)


def bind(source: Path, **options: object) -> docker.types.Mount:
    mount = docker.types.Mount("/m", str(source), type="bind", read_only=True)
    mount["BindOptions"] = options
    return mount


def writes(engine: Engine, image: str, mount: docker.types.Mount, version: str = "1.50"
           ) -> str:
    """Which of /m and its submount /m/sub the container can write to."""
    api = docker.APIClient(base_url=engine.host, version=version)
    container = api.create_container(
        image, ["sh", "-c", "touch /m/top 2>/dev/null && echo top; "
                            "touch /m/sub/x 2>/dev/null && echo sub; true"],
        host_config=api.create_host_config(mounts=[mount]))
    try:
        api.start(container)
        api.wait(container)
        return api.logs(container).decode().strip()
    finally:
        api.remove_container(container)


def test_read_only_binds_recursively_as_docker_api_1_44(
        engine: Engine, clean: str, source_with_submount: Path) -> None:
    """Since API 1.44 a read-only bind is read-only below it too;
    ReadOnlyNonRecursive leaves the submounts writable, ReadOnlyForceRecursive
    insists; an older client keeps the old non-recursive behaviour."""
    assert writes(engine, clean, bind(source_with_submount)) == ""
    assert writes(engine, clean, bind(source_with_submount, Propagation="rprivate",
                                      ReadOnlyForceRecursive=True)) == ""
    assert writes(engine, clean, bind(source_with_submount,
                                      ReadOnlyNonRecursive=True)) == "sub"
    assert writes(engine, clean, bind(source_with_submount), version="1.43") == "sub"
    api = engine.client().api
    container = api.create_container(clean, ["true"], host_config=api.create_host_config(
        mounts=[bind(source_with_submount, ReadOnlyForceRecursive=True,
                     Propagation="rprivate")]))
    assert api.inspect_container(container)["HostConfig"]["Mounts"][0]["BindOptions"] == {
        "Propagation": "rprivate", "ReadOnlyForceRecursive": True}
    api.remove_container(container)


@pytest.mark.parametrize(("options", "read_only", "version", "message"), [
    ({"ReadOnlyForceRecursive": True, "Propagation": "rprivate"}, False, "1.50",
     "mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive"),
    ({"ReadOnlyNonRecursive": True}, False, "1.50",
     "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive"),
    ({"ReadOnlyNonRecursive": True, "ReadOnlyForceRecursive": True}, True, "1.50",
     "mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive"),
    ({"ReadOnlyForceRecursive": True, "Propagation": "rshared"}, True, "1.50",
     "option ReadOnlyForceRecursive requires BindOptions.Propagation to be 'rprivate'"),
    ({"ReadOnlyForceRecursive": True, "Propagation": "rprivate"}, True, "1.43",
     "BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer"),
])
def test_read_only_recursion_conflicts_are_refused(
        engine: Engine, clean: str, tmp_path: Path, options: dict, read_only: bool,
        version: str, message: str) -> None:
    api = docker.APIClient(base_url=engine.host, version=version)
    mount = bind(tmp_path, **options)
    mount["ReadOnly"] = read_only
    with pytest.raises(docker.errors.APIError, match=re.escape(message)) as refused:
        api.create_container(clean, ["true"], host_config=api.create_host_config(
            mounts=[mount]))
    assert refused.value.status_code == 400
    assert api.containers(all=True) == []
