"""services/container/mounts.py: parsing as Docker, planning against a real
volume service (in-process gRPC on a temp root), copy-up and release."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from berth.container.v1 import container_pb2
from berth.volume.v1 import volume_pb2, volume_pb2_grpc
from services.common.config import Config
from services.common.errors import InvalidArgument, NotFound
from services.common.events import EventBus
from services.common.filters import Filters
from services.common.interceptors import ServerInterceptor
from services.common.peers import PeerClient
from services.container.host import kernel_supports_recursive_read_only
from services.container.mounts import (
    MountPlan,
    ReadOnlyRecursion,
    copy_up,
    merge_tmpfs_options,
    parse_bind,
    parse_mount,
    plan_mounts,
    release_mounts,
)
from services.volume.local import LocalDriver
from services.volume.servicer import VolumeServicer
from services.volume.store import VolumeStore
from services.volume.volumes import VolumeManager

CID = "c" * 64


def test_parse_bind_forms() -> None:
    named = parse_bind("data:/x")
    assert (named.type, named.source, named.mode, named.read_only) == ("volume", "data", "z",
                                                                      False)
    assert parse_bind("data:/x:ro").read_only
    assert not parse_bind("data:/x:nocopy").copy
    bind = parse_bind("/h:/x:ro,rshared")
    assert (bind.type, bind.propagation, bind.mode, bind.read_only) == (
        "bind", "rshared", "ro,rshared", True)
    assert parse_bind("/h:/x").propagation == "rprivate"
    anonymous = parse_bind("/data")
    assert (anonymous.type, anonymous.source, anonymous.mode) == ("volume", "", "")


@pytest.mark.parametrize(("raw", "message"), [
    ("/x:/", "invalid volume specification: '/x:/': invalid mount config for type \"bind\": "
             "invalid specification: destination can't be '/'"),
    ("vv:rel", "invalid volume specification: 'vv:rel': invalid mount config for type "
               "\"volume\": invalid mount path: 'rel' mount path must be absolute"),
    ("a:/b:c", "invalid mode: c"),
    ("vv:ro", "invalid volume specification: 'vv:ro'"),
    ("/a:/b:rw:x", "invalid volume specification: '/a:/b:rw:x'"),
    ("a:/b:ro,rw", "invalid mode: ro,rw"),
])
def test_parse_bind_errors(raw: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_bind(raw)
    assert caught.value.message == message


def _mount(**fields: Any) -> container_pb2.Mount:
    return container_pb2.Mount(**fields)


@pytest.mark.parametrize(("mount", "message"), [
    (_mount(type="bind", source="/nonexistent-berth", target="/x"),
     'invalid mount config for type "bind": bind source path does not exist: '
     '/nonexistent-berth'),
    (_mount(type="bind", source="/tmp", target="/"),
     'invalid mount config for type "bind": invalid specification: destination can\'t be \'/\''),
    (_mount(type="volume", target="rel"),
     'invalid mount config for type "volume": invalid mount path: \'rel\' mount path must be '
     'absolute'),
    (_mount(type="volume", target="/x", read_only=True),
     'invalid mount config for type "volume": must not set ReadOnly mode when using '
     'anonymous volumes'),
    (_mount(type="tmpfs", source="foo", target="/x"),
     'invalid mount config for type "tmpfs": field Source must not be specified'),
    (_mount(type="bind", source="/tmp", target="/x",
            bind_options=container_pb2.BindOptions(propagation="bogus")),
     'invalid mount config for type "bind": invalid propagation mode: bogus'),
    (_mount(type="volume", source="v", target="/x",
            volume_options=container_pb2.VolumeOptions(subpath="../a")),
     'invalid mount config for type "volume": subpath must be a relative path within the '
     'volume'),
    (_mount(type="npipe", target="/x"), 'invalid mount config for type "npipe": mount type '
                                        'unknown'),
])
def test_parse_mount_errors(mount: container_pb2.Mount, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_mount(mount)
    assert caught.value.message == message


def test_tmpfs_options() -> None:
    request = parse_mount(_mount(type="tmpfs", target="/t", tmpfs_options=container_pb2.
                                 TmpfsOptions(size_bytes=1 << 20, mode=0o700)))
    assert request.tmpfs_options == ["size=1m", "mode=700"]
    assert merge_tmpfs_options(["noexec", "nosuid", "size=1m", "exec", "size=2m"]) == [
        "nosuid", "exec", "size=2m"]


Scenario = Callable[[Any, VolumeManager], Awaitable[None]]


def run_with_volume_service(tmp_path: Path, scenario: Scenario) -> None:
    """Serve a real volume service on a unix socket under tmp_path and run `scenario`."""
    async def main() -> None:
        manager = VolumeManager(VolumeStore(tmp_path / "state.db"),
                                LocalDriver(tmp_path / "volumes"), EventBus("volume"))
        server = grpc.aio.server(interceptors=[ServerInterceptor()])
        volume_pb2_grpc.add_VolumeServiceServicer_to_server(
            VolumeServicer(manager, manager.events), server)
        address = f"unix://{tmp_path / 'volume.sock'}"
        server.add_insecure_port(address)
        await server.start()
        volumes = PeerClient.connect(Config(peers={"volume": address}), "volume",
                             volume_pb2_grpc.VolumeServiceStub)
        try:
            await scenario(volumes, manager)
        finally:
            await volumes.close()
            await server.stop(None)
            manager.store.db.close()
    asyncio.run(main())


async def _no_containers(name: str) -> list[container_pb2.MountPoint]:
    raise NotFound(f"No such container: {name}")


def test_plan_leases_volumes_and_orders_mounts(tmp_path: Path) -> None:
    async def scenario(stub: Any, manager: VolumeManager) -> None:
        config = container_pb2.ContainerConfig(volumes=["/anon"])
        host = container_pb2.HostConfig(
            binds=["named:/data/deep:ro", f"{tmp_path}/made:/made"], tmpfs={"/run": "size=1m"},
            mounts=[_mount(type="tmpfs", target="/data",
                           tmpfs_options=container_pb2.TmpfsOptions(size_bytes=4096))])
        plan = await plan_mounts(CID, config, host, ["/image-vol", "/anon"], stub,
                                 _no_containers, ReadOnlyRecursion())
        plan = MountPlan.from_json(plan.to_json())
        destinations = [m["destination"] for m in plan.oci_mounts]
        assert destinations.index("/data") < destinations.index("/data/deep")
        by_dest = {m["destination"]: m for m in plan.oci_mounts}
        assert by_dest["/data/deep"]["options"] == ["rbind", "rro"]
        assert by_dest["/made"]["options"] == ["rbind", "rprivate"]
        assert by_dest["/run"]["options"] == ["noexec", "nosuid", "nodev", "rprivate",
                                              "size=1m"]
        assert by_dest["/data"]["options"][-1] == "size=4k"
        inspect = {m.destination: m for m in plan.mount_points()}
        assert "/run" not in inspect
        assert (inspect["/data/deep"].name, inspect["/data/deep"].mode,
                inspect["/data/deep"].rw) == ("named", "ro", False)
        assert inspect["/made"].propagation == "rprivate"
        assert plan.bind_dirs == [f"{tmp_path}/made"]
        assert {e["destination"] for e in plan.copy_up} == {"/data/deep", "/anon", "/image-vol"}
        views = await manager.list(Filters({"dangling": ["false"]}), usage=False)
        assert len(views) == 3
        assert all(manager.store.holders(v.record.name) == [CID] for v in views)
        with pytest.raises(Exception, match="in use"):
            await manager.remove("named", force=True)
        await release_mounts(CID, stub, remove_anonymous=True)
        assert [v.record.name for v in await manager.list(Filters(), usage=False)] == ["named"]
    run_with_volume_service(tmp_path, scenario)


def test_plan_failure_releases_everything(tmp_path: Path) -> None:
    async def scenario(stub: Any, manager: VolumeManager) -> None:
        host = container_pb2.HostConfig(binds=["keep:/a", "/b", "bad/name:/c"])
        with pytest.raises(InvalidArgument, match="includes invalid characters"):
            await plan_mounts(CID, container_pb2.ContainerConfig(), host, [], stub,
                              _no_containers, ReadOnlyRecursion())
        volumes = await manager.list(Filters(), usage=False)
        assert [v.record.name for v in volumes] == ["keep"]
        assert manager.store.holders("keep") == []
        duplicate = container_pb2.HostConfig(binds=["one:/a", "two:/a"])
        with pytest.raises(InvalidArgument, match="Duplicate mount point: /a"):
            await plan_mounts(CID, container_pb2.ContainerConfig(), duplicate, [], stub,
                              _no_containers, ReadOnlyRecursion())
        assert manager.store.get("one") is None
    run_with_volume_service(tmp_path, scenario)


def test_volumes_from_shares_volumes(tmp_path: Path) -> None:
    async def scenario(stub: Any, manager: VolumeManager) -> None:
        first = await plan_mounts(CID, container_pb2.ContainerConfig(),
                                  container_pb2.HostConfig(binds=["shared:/s", "/h:/h"]), [],
                                  stub, _no_containers, ReadOnlyRecursion())

        async def resolve(name: str) -> list[container_pb2.MountPoint]:
            assert name == "first"
            return first.mount_points()
        other = "d" * 64
        second = await plan_mounts(other, container_pb2.ContainerConfig(),
                                   container_pb2.HostConfig(volumes_from=["first:ro"]), [],
                                   stub, resolve, ReadOnlyRecursion())
        points = {m.destination: m for m in second.mount_points()}
        assert points["/s"].name == "shared" and not points["/s"].rw
        assert points["/h"].source == "/h"
        assert manager.store.holders("shared") == [CID, other]
        assert second.copy_up == []
        third = await plan_mounts("e" * 64, container_pb2.ContainerConfig(volumes=["/s"]),
                                  container_pb2.HostConfig(volumes_from=["first"]), ["/s"],
                                  stub, resolve, ReadOnlyRecursion())
        assert [m.name for m in third.mount_points()] == ["", "shared"]
    run_with_volume_service(tmp_path, scenario)


def test_copy_up_fills_only_empty_volumes(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "data" / "sub").mkdir(parents=True)
    (rootfs / "data" / "sub" / "file").write_text("from image")
    os.chown(rootfs / "data" / "sub", 1000, 1000)
    (rootfs / "data").chmod(0o710)
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "mine").write_text("kept")
    plan = MountPlan(copy_up=[{"source": str(empty), "destination": "/data"},
                              {"source": str(full), "destination": "/data"},
                              {"source": str(tmp_path / "x"), "destination": "/missing"}],
                     bind_dirs=[str(tmp_path / "host" / "dir")])
    asyncio.run(copy_up(plan, rootfs))
    assert (empty / "sub" / "file").read_text() == "from image"
    assert (empty / "sub").stat().st_uid == 1000
    assert empty.stat().st_mode & 0o777 == 0o710
    assert sorted(p.name for p in full.iterdir()) == ["mine"]
    assert (tmp_path / "host" / "dir").is_dir()


def test_release_keeps_named_volumes(tmp_path: Path) -> None:
    async def scenario(stub: Any, manager: VolumeManager) -> None:
        await plan_mounts(CID, container_pb2.ContainerConfig(),
                          container_pb2.HostConfig(binds=["named:/n", "/anon"]), [], stub,
                          _no_containers, ReadOnlyRecursion())
        await release_mounts(CID, stub, remove_anonymous=False)
        assert len(await manager.list(Filters({"dangling": ["true"]}), usage=False)) == 2
        reply = await stub.Prune(volume_pb2.PruneVolumesRequest())
        assert len(reply.deleted) == 1
        assert manager.store.get("named") is not None
    run_with_volume_service(tmp_path, scenario)


def test_read_only_recursion_where_the_host_cannot() -> None:
    assert kernel_supports_recursive_read_only("5.12.0") is True
    assert kernel_supports_recursive_read_only("6.18.44-fc-v1147") is True
    assert kernel_supports_recursive_read_only("5.10.0-28-amd64") is False
    unsupported = ReadOnlyRecursion(unsupported="rro is not supported by runtime \"old\"")
    plain = parse_mount(_mount(type="bind", source="/", target="/x", read_only=True))
    unsupported.plan(plain)
    assert not plain.read_only_recursive
    forced = parse_mount(_mount(
        type="bind", source="/", target="/x", read_only=True,
        bind_options=container_pb2.BindOptions(read_only_force_recursive=True)))
    with pytest.raises(InvalidArgument, match='rro is not supported by runtime "old"'):
        unsupported.plan(forced)
    ReadOnlyRecursion().plan(forced)
    assert forced.read_only_recursive
