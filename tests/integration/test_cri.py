"""The CRI (runtime.v1) runtime and image services on a real engine, through
the generated stubs as kubelet would call them: a pod's whole lifecycle,
idempotent stop and remove, resources (hugepages, unified, pod resize), the
streamed lists, and a restart of the cri service."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.types.v1 import types_pb2, types_pb2_grpc
from k8s.runtime.v1 import api_pb2 as cri
from k8s.runtime.v1 import api_pb2_grpc
from services.container import cgroups
from tests.support.cri import PAUSE_IMAGE, load_pause_image, remove_pods
from tests.support.engine import Engine, running_engine
from tests.support.images import busybox_rootfs_tar, image_archive
from tests.support.polling import wait_for
from tests.support.registry import Registry


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    config = tmp_path_factory.mktemp("cri") / "engine.json"
    (config.parent / "certs.d").mkdir()
    config.write_text(json.dumps({"cri-sandbox-image": PAUSE_IMAGE,
                                  "certs-dir": str(config.parent / "certs.d")}))
    with running_engine(args=("--config", str(config))) as running:
        yield running


@pytest.fixture(scope="module")
def images(engine: Engine, busybox: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """busybox, and a pause image (busybox sleeping) for the sandboxes."""
    load_pause_image(engine, tmp_path_factory.mktemp("pause"))
    return busybox


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"unix://{engine.exec_root}/cri.sock") as opened:
        yield opened


@pytest.fixture(scope="module")
def runtime(channel: grpc.Channel) -> api_pb2_grpc.RuntimeServiceStub:
    return api_pb2_grpc.RuntimeServiceStub(channel)


@pytest.fixture(scope="module")
def image_service(channel: grpc.Channel) -> api_pb2_grpc.ImageServiceStub:
    return api_pb2_grpc.ImageServiceStub(channel)


@pytest.fixture
def pods(runtime: api_pb2_grpc.RuntimeServiceStub) -> Iterator[list[str]]:
    """Sandboxes a test ran; all are stopped and removed afterwards. The
    node's hostname must come out unchanged (host-network pods share it)."""
    node_name = socket.gethostname()
    made: list[str] = []
    yield made
    remove_pods(runtime, made)
    assert socket.gethostname() == node_name


@pytest.fixture
def log_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="berth-cri-logs-") as directory:
        yield Path(directory)


def pod_config(name: str, log_dir: Path) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, namespace="default", uid=f"uid-{name}"),
        hostname=name, log_directory=str(log_dir), labels={"app": name},
        dns_config=cri.DNSConfig(servers=["10.0.0.10"], searches=["svc.local"],
                                 options=["ndots:5"]),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=cri.NODE))))


def run_pod(runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
            config: cri.PodSandboxConfig) -> str:
    sandbox_id = runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config)).pod_sandbox_id
    pods.append(sandbox_id)
    return sandbox_id


def start_container(runtime: api_pb2_grpc.RuntimeServiceStub, sandbox_id: str,
                    pod: cri.PodSandboxConfig, image: str, script: str,
                    name: str = "main") -> str:
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=image),
        command=["sh", "-c", script], log_path=f"{name}/0.log", labels={"role": name},
        envs=[cri.KeyValue(key="GREETING", value=b"hello")])
    cid = runtime.CreateContainer(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id
    runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    return cid


def status_of(runtime: api_pb2_grpc.RuntimeServiceStub, cid: str) -> cri.ContainerStatus:
    return runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=cid)).status


def test_version_status_and_runtime_config(runtime: api_pb2_grpc.RuntimeServiceStub) -> None:
    version = runtime.Version(cri.VersionRequest())
    assert (version.runtime_name, version.runtime_api_version) == ("berth", "v1")
    conditions = {c.type: c for c in runtime.Status(cri.StatusRequest()).status.conditions}
    assert conditions["RuntimeReady"].status
    assert conditions["NetworkReady"].status or conditions["NetworkReady"].reason
    config = runtime.RuntimeConfig(cri.RuntimeConfigRequest())
    assert config.linux.cgroup_driver == cri.CGROUPFS


def test_pod_lifecycle(engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                       image_service: api_pb2_grpc.ImageServiceStub, pods: list[str],
                       log_dir: Path) -> None:
    pod = pod_config("lifecycle", log_dir)
    node_name = socket.gethostname()
    sandbox_id = run_pod(runtime, pods, pod)
    sandbox = runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id,
                                                                   verbose=True))
    assert sandbox.status.state == cri.SANDBOX_READY
    assert sandbox.status.labels["app"] == "lifecycle"
    pause_id = json.loads(sandbox.info["info"])["pauseContainerID"]
    pause = json.loads(engine.docker("inspect", pause_id).stdout)[0]
    assert pause["Config"]["Labels"]["io.kubernetes.cri.type"] == "podsandbox"

    image = image_service.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image=images)))
    assert image.image.id.startswith("sha256:")
    cid = start_container(runtime, sandbox_id, pod, images,
                          'echo "$GREETING out"; echo err >&2; exec sleep 1000')
    status = status_of(runtime, cid)
    assert status.state == cri.CONTAINER_RUNNING
    assert status.image_id == image.image.id and status.started_at > 0
    assert status.log_path == str(log_dir / "main" / "0.log")

    run = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["cat", "/etc/resolv.conf"]))
    assert run.exit_code == 0
    assert b"nameserver 10.0.0.10" in run.stdout and b"search svc.local" in run.stdout
    # A host-network pod has the node's UTS namespace, and leaves its name alone.
    hostname = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["hostname"]))
    assert hostname.stdout.decode().strip() == socket.gethostname() == node_name
    etc_hostname = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid,
                                                        cmd=["cat", "/etc/hostname"]))
    assert etc_hostname.stdout == b"lifecycle\n"
    failing = runtime.ExecSync(cri.ExecSyncRequest(
        container_id=cid, cmd=["sh", "-c", "echo no >&2; exit 3"]))
    assert (failing.exit_code, failing.stderr) == (3, b"no\n")

    log_file = log_dir / "main" / "0.log"
    wait_for(lambda: b"stderr F err" in log_file.read_bytes())
    lines = log_file.read_bytes().splitlines()
    assert any(line.endswith(b" stdout F hello out") for line in lines)

    stats = runtime.ContainerStats(cri.ContainerStatsRequest(container_id=cid)).stats
    assert stats.attributes.id == cid and stats.memory.working_set_bytes.value > 0
    assert stats.cpu.usage_core_nano_seconds.value > 0
    pod_stats = runtime.PodSandboxStats(cri.PodSandboxStatsRequest(
        pod_sandbox_id=sandbox_id)).stats
    assert [c.attributes.id for c in pod_stats.linux.containers] == [cid]
    assert pod_stats.linux.memory.working_set_bytes.value > 0
    listed_stats = runtime.ListPodSandboxStats(cri.ListPodSandboxStatsRequest()).stats
    assert [s.attributes.id for s in listed_stats] == [sandbox_id]
    listed = runtime.ListContainers(cri.ListContainersRequest(filter=cri.ContainerFilter(
        pod_sandbox_id=sandbox_id, label_selector={"role": "main"}))).containers
    assert [c.id for c in listed] == [cid]
    labels = engine.docker("inspect", "--format", "{{json .Config.Labels}}", cid).stdout
    assert json.loads(labels)["io.kubernetes.sandbox.id"] == sandbox_id

    runtime.StopContainer(cri.StopContainerRequest(container_id=cid, timeout=1))
    stopped = status_of(runtime, cid)
    assert stopped.state == cri.CONTAINER_EXITED and stopped.finished_at >= stopped.started_at
    assert stopped.reason == "Error"

    runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    sandbox = runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
    assert sandbox.status.state == cri.SANDBOX_NOTREADY
    runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    assert not runtime.ListPodSandbox(cri.ListPodSandboxRequest()).items
    assert not runtime.ListContainers(cri.ListContainersRequest()).containers
    assert engine.docker("ps", "-aq").stdout.strip() == b""


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in lines if line and not line.startswith("#")}


def test_health_and_metrics(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                                      channel: grpc.Channel, pods: list[str],
                                      log_dir: Path) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="runtime.v1.RuntimeService"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    info = types_pb2_grpc.InfoStub(channel).GetServiceInfo(types_pb2.GetServiceInfoRequest())
    assert info.name == "cri"
    before = scrape(info.metrics_url)
    run_pod(runtime, pods, pod_config("metrics", log_dir))
    after = scrape(info.metrics_url)
    ready = 'berth_cri_pod_sandboxes{state="ready"}'
    assert after[ready] == before[ready] + 1
    runs = "berth_cri_run_pod_sandbox_seconds_count"
    assert after[runs] == before[runs] + 1


def test_pull_through_a_hosts_toml_mirror(
        engine: Engine, registry: Registry, image_service: api_pb2_grpc.ImageServiceStub,
        tmp_path: Path) -> None:
    pushed = f"{registry.address}/library/busybox:mirrored"
    archive = tmp_path / "mirrored.tar"
    archive.write_bytes(image_archive([busybox_rootfs_tar()], [pushed], {"Cmd": ["true"]}))
    engine.docker("load", "-i", str(archive))
    engine.docker("push", pushed)
    engine.docker("rmi", pushed)
    certs = Path(json.loads(engine_config(engine))["certs-dir"])
    (certs / "registry.invalid").mkdir()
    (certs / "registry.invalid" / "hosts.toml").write_text(
        f'server = "https://registry.invalid"\n'
        f'[host."http://{registry.address}"]\n  capabilities = ["pull", "resolve"]\n')
    name = "registry.invalid/library/busybox:mirrored"
    spec = cri.ImageSpec(image=name)
    image_ref = image_service.PullImage(cri.PullImageRequest(image=spec)).image_ref
    status = image_service.ImageStatus(cri.ImageStatusRequest(image=spec)).image
    assert status.id == image_ref and name in status.repo_tags
    listed = image_service.ListImages(cri.ListImagesRequest(
        filter=cri.ImageFilter(image=spec))).images
    assert [image.id for image in listed] == [image_ref]
    for _ in range(2):
        image_service.RemoveImage(cri.RemoveImageRequest(image=spec))
    assert not image_service.ImageStatus(cri.ImageStatusRequest(image=spec)).HasField("image")
    with pytest.raises(grpc.RpcError) as raised:
        image_service.PullImage(cri.PullImageRequest(
            image=cri.ImageSpec(image="registry.invalid/library/absent:1")))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def engine_config(engine: Engine) -> str:
    args = list(engine.args)
    return Path(args[args.index("--config") + 1]).read_text()


def test_security_context(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                          pods: list[str], log_dir: Path) -> None:
    pod = pod_config("secure", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    context = cri.LinuxContainerSecurityContext(
        run_as_user=cri.Int64Value(value=1000), run_as_group=cri.Int64Value(value=2000),
        supplemental_groups=[3000], readonly_rootfs=True, no_new_privs=True,
        capabilities=cri.Capability(drop_capabilities=["ALL"],
                                    add_capabilities=["NET_BIND_SERVICE"]),
        seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfile.RuntimeDefault))
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="secure"), image=cri.ImageSpec(image=images),
        command=["sleep", "1000"], linux=cri.LinuxContainerConfig(security_context=context))
    cid = runtime.CreateContainer(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id
    runtime.StartContainer(cri.StartContainerRequest(container_id=cid))

    def run(*cmd: str) -> cri.ExecSyncResponse:
        return runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=list(cmd)))

    assert run("id", "-u").stdout == b"1000\n"
    assert run("id", "-G").stdout == b"2000 3000\n"
    user = status_of(runtime, cid).user.linux
    assert (user.uid, user.gid, list(user.supplemental_groups)) == (1000, 2000, [2000, 3000])
    assert run("touch", "/made").exit_code != 0
    status = dict(line.split(":\t", 1) for line in
                  run("cat", "/proc/self/status").stdout.decode().splitlines() if ":\t" in line)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert int(status["CapBnd"], 16) == 1 << 10   # CAP_NET_BIND_SERVICE only

    privileged = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="privileged"), image=cri.ImageSpec(image=images),
        command=["sleep", "1000"], linux=cri.LinuxContainerConfig(
            security_context=cri.LinuxContainerSecurityContext(privileged=True)))
    with pytest.raises(grpc.RpcError) as refused:
        runtime.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name="bad"), image=cri.ImageSpec(image=images),
                linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                    run_as_group=cri.Int64Value(value=1)))),
            sandbox_config=pod))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    cid = runtime.CreateContainer(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=privileged, sandbox_config=pod)).container_id
    runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    script = "mkdir /tmp/m && mount -t tmpfs none /tmp/m && echo ok"
    mounted = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script]))
    assert mounted.stdout == b"ok\n", mounted.stderr


@pytest.mark.parametrize(("policy", "groups"), [(cri.Merge, b"0 10 3000\n"),
                                                (cri.Strict, b"0 3000\n")])
def test_supplemental_groups_policy(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                                    pods: list[str], log_dir: Path, policy: int,
                                    groups: bytes) -> None:
    """root is a member of wheel (10) in the image's /etc/group: Merge adds it."""
    assert runtime.Status(cri.StatusRequest()).features.supplemental_groups_policy
    pod = pod_config(f"groups-{policy}", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    context = cri.LinuxContainerSecurityContext(
        run_as_user=cri.Int64Value(value=0), supplemental_groups=[3000],
        supplemental_groups_policy=policy)
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="groups"), image=cri.ImageSpec(image=images),
        command=["sleep", "1000"], linux=cri.LinuxContainerConfig(security_context=context))
    cid = runtime.CreateContainer(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id
    runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    run = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["id", "-G"]))
    assert run.stdout == groups
    listed = [int(g) for g in groups.split()]
    assert list(status_of(runtime, cid).user.linux.supplemental_groups) == listed


def test_recursive_read_only_mount(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                                   pods: list[str], log_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "berth-test", str(tmp_path / "sub")], check=True)
    try:
        pod = pod_config("rro", log_dir)
        sandbox_id = run_pod(runtime, pods, pod)

        def create(name: str, **options: object) -> str:
            config = cri.ContainerConfig(
                metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=images),
                command=["sleep", "1000"], mounts=[cri.Mount(
                    host_path=str(tmp_path), container_path="/data", **options)])
            return runtime.CreateContainer(cri.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id

        for name, recursive in (("flat", False), ("deep", True)):
            cid = create(name, readonly=True, recursive_read_only=recursive)
            runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
            touch = runtime.ExecSync(cri.ExecSyncRequest(
                container_id=cid, cmd=["touch", f"/data/sub/{name}"]))
            assert (touch.exit_code != 0) == recursive, touch.stderr
        with pytest.raises(grpc.RpcError) as refused:
            create("writable", readonly=False, recursive_read_only=True)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as refused:
            create("slave", readonly=True, recursive_read_only=True,
                   propagation=cri.PROPAGATION_HOST_TO_CONTAINER)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "sub")], check=True)


def test_cri_metrics(images: str, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
                     log_dir: Path) -> None:
    descriptors = {d.name: d for d in runtime.ListMetricDescriptors(
        cri.ListMetricDescriptorsRequest()).descriptors}
    assert all(d.help and d.label_keys for d in descriptors.values())
    pod = pod_config("metered", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")
    listed = runtime.ListPodSandboxMetrics(cri.ListPodSandboxMetricsRequest()).pod_metrics
    [metrics] = [m for m in listed if m.pod_sandbox_id == sandbox_id]
    [container] = metrics.container_metrics
    values = {m.name: m for m in container.metrics}
    assert container.container_id == cid
    assert values["container_memory_working_set_bytes"].value.value > 0
    assert values["container_threads"].value.value >= 1
    assert values["container_start_time_seconds"].value.value > 0
    for metric in container.metrics:
        assert len(metric.label_values) == len(descriptors[metric.name].label_keys)
    assert {m.name for m in container.metrics} <= set(descriptors)


def test_image_volume(engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                      pods: list[str], log_dir: Path) -> None:
    pod = pod_config("imagevolume", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)

    def create(name: str, **mount: object) -> str:
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=images),
            command=["sleep", "1000"], mounts=[cri.Mount(
                container_path="/image", image=cri.ImageSpec(image=images), **mount)])
        return runtime.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id

    cid = create("reader", readonly=True, image_sub_path="etc")
    runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    passwd = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid,
                                                  cmd=["head", "-1", "/image/passwd"]))
    assert passwd.stdout == b"root:x:0:0:root:/root:/bin/sh\n"
    written = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid,
                                                   cmd=["touch", "/image/new"]))
    assert written.exit_code != 0
    [mount] = status_of(runtime, cid).mounts
    image_id = json.loads(engine.docker("inspect", images).stdout)[0]["Id"]
    assert mount.image.image_ref == image_id
    for bad in ({"readonly": False}, {"readonly": True, "image_sub_path": "no/such/dir"}):
        with pytest.raises(grpc.RpcError) as refused:
            create("bad", **bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    volumes = engine.data_root / "cri" / "imagevolumes"
    assert len(list(volumes.iterdir())) == 1
    runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=cid))
    assert not list(volumes.iterdir())
    assert str(volumes) not in Path("/proc/self/mounts").read_text()


def test_container_events(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                          pods: list[str], log_dir: Path) -> None:
    events = runtime.GetContainerEvents(cri.GetEventsRequest())
    seen: queue.Queue[cri.ContainerEventResponse] = queue.Queue()

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):   # cancelled at the end of the test
            for event in events:
                seen.put(event)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        pod = pod_config("events", log_dir)
        sandbox_id = run_pod(runtime, pods, pod)
        cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")
        runtime.StopContainer(cri.StopContainerRequest(container_id=cid, timeout=0))
        runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=cid))
        received = [seen.get(timeout=30) for _ in range(4)]
    finally:
        events.cancel()
    assert [(e.container_id, e.container_event_type) for e in received] == [
        (cid, cri.CONTAINER_CREATED_EVENT), (cid, cri.CONTAINER_STARTED_EVENT),
        (cid, cri.CONTAINER_STOPPED_EVENT), (cid, cri.CONTAINER_DELETED_EVENT)]
    assert received[1].pod_sandbox_status.id == sandbox_id
    assert received[1].containers_statuses[0].state == cri.CONTAINER_RUNNING


def test_cgroup_parent(engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                       pods: list[str], log_dir: Path) -> None:
    """The pod's cgroup_parent holds its containers (cgroupfs driver)."""
    parent = f"berth-cri-test-{os.getpid()}/pod-a"
    pod = pod_config("cgroups", log_dir)
    pod.linux.cgroup_parent = f"/{parent}"
    try:
        sandbox_id = run_pod(runtime, pods, pod)
        cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        memory = Path("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory") / parent / cid
        assert memory.is_dir() and memory.joinpath("cgroup.procs").read_text().strip()
        runtime.UpdateContainerResources(cri.UpdateContainerResourcesRequest(
            container_id=cid, linux=cri.LinuxContainerResources(
                memory_limit_in_bytes=64 << 20)))
        limit = memory / ("memory.max" if v2 else "memory.limit_in_bytes")
        assert int(limit.read_text()) == 64 << 20
        assert status_of(runtime, cid).resources.linux.memory_limit_in_bytes == 64 << 20
        stats = runtime.ContainerStats(cri.ContainerStatsRequest(container_id=cid)).stats
        assert stats.memory.working_set_bytes.value > 0
        runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    finally:
        for hierarchy in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]:
            for directory in (hierarchy / parent, hierarchy / parent.split("/")[0]):
                with contextlib.suppress(OSError):
                    directory.rmdir()


def test_stop_and_remove_of_unknown_ids_succeed(
        runtime: api_pb2_grpc.RuntimeServiceStub) -> None:
    unknown = "0" * 64
    runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=unknown))
    runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=unknown))
    runtime.StopContainer(cri.StopContainerRequest(container_id=unknown))
    runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=unknown))
    with pytest.raises(grpc.RpcError) as raised:
        runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=unknown))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_stop_and_remove_twice(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                               pods: list[str], log_dir: Path) -> None:
    pod = pod_config("twice", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")
    for _ in range(2):
        runtime.StopContainer(cri.StopContainerRequest(container_id=cid, timeout=0))
        runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    for _ in range(2):
        runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=cid))
        runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))


def test_exec_sync_timeout(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                           pods: list[str], log_dir: Path) -> None:
    pod = pod_config("timeout", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")
    with pytest.raises(grpc.RpcError) as raised:
        runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["sleep", "30"], timeout=1))
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    processes = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["ps", "-o", "args"]))
    assert b"sleep 30" not in processes.stdout


def test_reopen_container_log(images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
                              pods: list[str], log_dir: Path) -> None:
    pod = pod_config("reopen", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    cid = start_container(runtime, sandbox_id, pod, images,
                          "echo before; until [ -e /tmp/go ]; do sleep 0.1; done; "
                          "echo after; exec sleep 1000")
    log_file = log_dir / "main" / "0.log"
    wait_for(lambda: b"stdout F before" in log_file.read_bytes())
    log_file.rename(log_file.with_name("0.log.1"))
    runtime.ReopenContainerLog(cri.ReopenContainerLogRequest(container_id=cid))
    assert log_file.exists()
    runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["touch", "/tmp/go"]))
    wait_for(lambda: b"stdout F after" in log_file.read_bytes())
    assert b"after" not in log_file.with_name("0.log.1").read_bytes()


def test_sandboxes_survive_a_restart_of_the_cri_service(
        engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        channel: grpc.Channel, pods: list[str], log_dir: Path) -> None:
    pod = pod_config("restart", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")
    gone = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000", "gone")
    engine.docker("rm", "-f", gone)
    failed = runtime.CreateContainer(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, sandbox_config=pod, config=cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="failed"), image=cri.ImageSpec(image=images),
            command=["/no/such/binary"]))).container_id
    with pytest.raises(grpc.RpcError):
        runtime.StartContainer(cri.StartContainerRequest(container_id=failed))
    failure = status_of(runtime, failed)
    # What a RunPodSandbox cut short by a crash leaves: a labelled container no record names.
    orphan = engine.docker("create", "--label", "io.kubernetes.cri.type=podsandbox",
                           images, "true").stdout.decode().strip()
    info = types_pb2_grpc.InfoStub(channel).GetServiceInfo(types_pb2.GetServiceInfoRequest())
    assert info.object_counts["containers"] == 3
    os.kill(info.pid, signal.SIGKILL)

    def restarted() -> bool:
        try:
            again = types_pb2_grpc.InfoStub(channel).GetServiceInfo(
                types_pb2.GetServiceInfoRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return again.pid != info.pid

    wait_for(restarted, timeout=30)
    listed = runtime.ListPodSandbox(cri.ListPodSandboxRequest()).items
    assert [(s.id, s.state) for s in listed] == [(sandbox_id, cri.SANDBOX_READY)]
    assert status_of(runtime, cid).state == cri.CONTAINER_RUNNING
    assert status_of(runtime, failed) == failure
    run = runtime.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["echo", "still"]))
    assert run.stdout == b"still\n"
    wait_for(lambda: engine.docker("ps", "-aq", "--filter", f"id={orphan}").stdout == b"")

    def counted() -> int:
        return types_pb2_grpc.InfoStub(channel).GetServiceInfo(
            types_pb2.GetServiceInfoRequest()).object_counts["containers"]

    wait_for(lambda: counted() == 2)   # the removed container's record is forgotten


def test_streamed_lists_match_the_lists(
        images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        image_service: api_pb2_grpc.ImageServiceStub, pods: list[str], log_dir: Path) -> None:
    """The Stream* RPCs (KEP-5825) send what the List calls answer, each item
    once; a filter that matches nothing is a stream without messages."""
    pod = pod_config("streamed", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    cid = start_container(runtime, sandbox_id, pod, images, "exec sleep 1000")

    def ids(stream: Iterator, field: str, key: Callable) -> list[str]:
        messages = list(stream)
        assert all(getattr(m, field) for m in messages)
        return sorted(key(item) for m in messages for item in getattr(m, field))

    listed_pods = sorted(p.id for p in runtime.ListPodSandbox(
        cri.ListPodSandboxRequest()).items)
    assert sandbox_id in listed_pods
    assert ids(runtime.StreamPodSandboxes(cri.StreamPodSandboxesRequest()),
               "pod_sandboxes", lambda p: p.id) == listed_pods
    assert ids(runtime.StreamContainers(cri.StreamContainersRequest(
        filter=cri.ContainerFilter(pod_sandbox_id=sandbox_id))),
        "containers", lambda c: c.id) == [cid]
    assert ids(runtime.StreamContainerStats(cri.StreamContainerStatsRequest(
        filter=cri.ContainerStatsFilter(id=cid))),
        "container_stats", lambda c: c.attributes.id) == [cid]
    assert ids(runtime.StreamPodSandboxStats(cri.StreamPodSandboxStatsRequest(
        filter=cri.PodSandboxStatsFilter(id=sandbox_id))),
        "pod_sandbox_stats", lambda p: p.attributes.id) == [sandbox_id]
    assert sandbox_id in ids(runtime.StreamPodSandboxMetrics(
        cri.StreamPodSandboxMetricsRequest()), "pod_sandbox_metrics", lambda p: p.pod_sandbox_id)
    listed_images = sorted(i.id for i in image_service.ListImages(
        cri.ListImagesRequest()).images)
    assert ids(image_service.StreamImages(cri.StreamImagesRequest()),
               "images", lambda i: i.id) == listed_images
    assert not list(runtime.StreamContainers(cri.StreamContainersRequest(
        filter=cri.ContainerFilter(id="0" * 64))))


def test_update_pod_sandbox_resources(runtime: api_pb2_grpc.RuntimeServiceStub,
                                      pods: list[str], log_dir: Path) -> None:
    """After a pod resize kubelet hands the pod's new resources and overhead
    to the runtime, which keeps them in the pod's config (containerd 2)."""
    sandbox_id = run_pod(runtime, pods, pod_config("resized", log_dir))
    runtime.UpdatePodSandboxResources(cri.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=sandbox_id,
        overhead=cri.LinuxContainerResources(cpu_shares=25, memory_limit_in_bytes=32 << 20),
        resources=cri.LinuxContainerResources(cpu_quota=50_000, cpu_period=100_000,
                                              memory_limit_in_bytes=256 << 20)))
    info = json.loads(runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(
        pod_sandbox_id=sandbox_id, verbose=True)).info["info"])
    linux = info["config"]["linux"]
    assert linux["overhead"] == {"cpuShares": "25", "memoryLimitInBytes": str(32 << 20)}
    assert linux["resources"] == {"cpuQuota": "50000", "cpuPeriod": "100000",
                                  "memoryLimitInBytes": str(256 << 20)}
    with pytest.raises(grpc.RpcError) as raised:
        runtime.UpdatePodSandboxResources(cri.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id="0" * 64, resources=cri.LinuxContainerResources(cpu_shares=2)))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_checkpoint_container_is_unimplemented(
        images: str, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
        log_dir: Path) -> None:
    pod = pod_config("checkpoint", log_dir)
    cid = start_container(runtime, run_pod(runtime, pods, pod), pod, images, "exec sleep 1000")
    with pytest.raises(grpc.RpcError) as raised:
        runtime.CheckpointContainer(cri.CheckpointContainerRequest(
            container_id=cid, location=str(log_dir / "checkpoint.tar")))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details() == (f"cannot checkpoint container {cid}: berth does not "
                                      "implement container checkpoints (CRIU through runc)")
    assert status_of(runtime, cid).state == cri.CONTAINER_RUNNING
    with pytest.raises(grpc.RpcError) as raised:
        runtime.CheckpointContainer(cri.CheckpointContainerRequest(container_id="0" * 64))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def hugetlb_limit(cgroup: str, page_size: str) -> int:
    return int(cgroups.hugetlb_limit_file(cgroup, page_size).read_text())


def test_hugepage_limits_and_unified_resources(
        engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        pods: list[str], log_dir: Path) -> None:
    """kubelet's hugepage limits (one per host size, 0 where the pod asks for
    none) apply where the host has the hugetlb controller and are skipped
    where it has none, as in containerd and CRI-O; an update changes them in
    place. Unified (cgroup v2) files are refused on a cgroup v1 host before
    anything is made."""
    parent = f"berth-cri-hugepages-{os.getpid()}"
    pod = pod_config("hugepages", log_dir)
    pod.linux.cgroup_parent = f"/{parent}"
    sizes = cgroups.hugepage_sizes()
    limits = [cri.HugepageLimit(page_size=size, limit=0) for size in sizes]
    limits[0].limit = 4 << 20
    try:
        sandbox_id = run_pod(runtime, pods, pod)
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name="huge"), image=cri.ImageSpec(image=images),
            command=["sleep", "1000"], linux=cri.LinuxContainerConfig(
                resources=cri.LinuxContainerResources(hugepage_limits=limits)))
        cid = runtime.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id
        runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
        cgroup = f"/{parent}/{cid}"
        if cgroups.hugetlb_present():
            assert hugetlb_limit(cgroup, sizes[0]) == 4 << 20
        runtime.UpdateContainerResources(cri.UpdateContainerResourcesRequest(
            container_id=cid, linux=cri.LinuxContainerResources(hugepage_limits=[
                cri.HugepageLimit(page_size=sizes[0], limit=8 << 20)])))
        status = status_of(runtime, cid)
        assert status.state == cri.CONTAINER_RUNNING
        assert status.resources.linux.hugepage_limits[0].limit == 8 << 20
        if cgroups.hugetlb_present():
            assert hugetlb_limit(cgroup, sizes[0]) == 8 << 20

        unified = cri.LinuxContainerResources(unified={"memory.high": str(64 << 20)})
        if cgroups.is_v2():
            runtime.UpdateContainerResources(cri.UpdateContainerResourcesRequest(
                container_id=cid, linux=unified))
            assert (cgroups.ROOT / parent / cid / "memory.high").read_text().strip() == \
                str(64 << 20)
        else:
            with pytest.raises(grpc.RpcError) as raised:
                runtime.UpdateContainerResources(cri.UpdateContainerResourcesRequest(
                    container_id=cid, linux=unified))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "unified resources are cgroup v2 files" in raised.value.details()
            config.metadata.name = "unified"
            config.linux.resources.CopyFrom(unified)
            with pytest.raises(grpc.RpcError) as raised:
                runtime.CreateContainer(cri.CreateContainerRequest(
                    pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [c.id for c in runtime.ListContainers(cri.ListContainersRequest(
                filter=cri.ContainerFilter(pod_sandbox_id=sandbox_id))).containers] == [cid]
        runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    finally:
        for hierarchy in [cgroups.ROOT, *cgroups.ROOT.iterdir()]:
            with contextlib.suppress(OSError):
                (hierarchy / parent).rmdir()


def test_a_container_log_stays_in_the_pods_log_directory(
        images: str, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
        log_dir: Path) -> None:
    """log_path is joined under log_directory as containerd joins it (an
    absolute one too); one climbing out of it, or a NUL anywhere in the
    config, is INVALID_ARGUMENT."""
    pod = pod_config("logs-stay", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)

    def create(name: str, log_path: str, **more: object) -> str:
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=images),
            command=["echo", "logged"], log_path=log_path, **more)
        return runtime.CreateContainer(cri.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id

    cid = create("absolute", f"{log_dir}/elsewhere.log")
    runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    joined = log_dir / str(log_dir).lstrip("/") / "elsewhere.log"
    wait_for(lambda: joined.exists() and b"logged" in joined.read_bytes())
    assert not (log_dir / "elsewhere.log").exists()
    for name, log_path, more in (
            ("climbing", "../../escaped.log", {}),
            ("nul-log", "a\0b/0.log", {}),
            ("nul-mount", "nul/0.log",
             {"mounts": [cri.Mount(container_path="/x", host_path="/tmp\0")]})):
        with pytest.raises(grpc.RpcError) as refused:
            create(name, log_path, **more)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    assert not (log_dir.parent.parent / "escaped.log").exists()


def test_a_container_runc_refuses_fails_with_runcs_message(
        images: str, runtime: api_pb2_grpc.RuntimeServiceStub, pods: list[str],
        log_dir: Path) -> None:
    pod = pod_config("refused", log_dir)
    sandbox_id = run_pod(runtime, pods, pod)
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="missing"), image=cri.ImageSpec(image=images),
        command=["/no/such/binary"])
    cid = runtime.CreateContainer(cri.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod)).container_id
    with pytest.raises(grpc.RpcError) as refused:
        runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    message = refused.value.details()
    assert message.startswith("failed to create containerd task: failed to create shim task: "
                              "OCI runtime create failed: ")
    assert "/no/such/binary" in message
    status = status_of(runtime, cid)
    assert (status.state, status.reason, status.message) == (
        cri.CONTAINER_EXITED, "StartError", message)
    assert status.exit_code == 128 and status.finished_at >= status.created_at
    listed = runtime.ListContainers(cri.ListContainersRequest(
        filter=cri.ContainerFilter(id=cid))).containers
    assert [c.state for c in listed] == [cri.CONTAINER_EXITED]
    with pytest.raises(grpc.RpcError) as again:
        runtime.StartContainer(cri.StartContainerRequest(container_id=cid))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    runtime.RemoveContainer(cri.RemoveContainerRequest(container_id=cid))


def test_a_pod_runc_refuses_fails_with_runcs_message_and_leaves_nothing(
        engine: Engine, images: str, runtime: api_pb2_grpc.RuntimeServiceStub,
        log_dir: Path) -> None:
    config = pod_config("refused-pod", log_dir)
    config.linux.sysctls["kernel.no_such_sysctl"] = "1"
    with pytest.raises(grpc.RpcError) as refused:
        runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config))
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert refused.value.details().startswith(
        "failed to create containerd task: failed to create shim task: "
        "OCI runtime create failed: ")
    assert "no_such_sysctl" in refused.value.details()
    names = runtime.ListPodSandbox(cri.ListPodSandboxRequest()).items
    assert "refused-pod" not in [p.metadata.name for p in names]
    assert b"refused-pod" not in engine.docker("ps", "-a", "--format", "{{.Names}}").stdout
