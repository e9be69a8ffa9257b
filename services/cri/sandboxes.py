"""Pod sandboxes: a pod's network namespace (from the network service, wired
by CNI) and a pause container that holds the pod's IPC, UTS and PID
namespaces, which the pod's containers join (docs/cri.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import json_format

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from k8s.runtime.v1 import api_pb2
from services.common.config import Config
from services.common.errors import (
    RUNTIME_CREATE_FAILED,
    AlreadyExists,
    BerthError,
    InvalidArgument,
    NotFound,
    RuntimeRefused,
)
from services.common.netns import NETNS_PATH_MODE
from services.common.validation import refuse_nul
from services.cri import labels
from services.cri.images import Images
from services.cri.metrics import RUN_POD_SECONDS
from services.cri.peers import OWNER, Peers
from services.cri.store import NOT_READY, READY, CriStore, Sandbox

log = logging.getLogger("berth.cri")

DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
_PROTOCOLS = {api_pb2.TCP: "tcp", api_pb2.UDP: "udp", api_pb2.SCTP: "sctp"}

Undo = list[Callable[[], Awaitable[None]]]


def pod_name(metadata: api_pb2.PodSandboxMetadata) -> str:
    """The pod as kubelet names it in its container names."""
    return f"{metadata.name}_{metadata.namespace}_{metadata.uid}_{metadata.attempt}"


def resolv_conf(dns: api_pb2.DNSConfig, fallback: str) -> str:
    """The pod's resolv.conf: kubelet's DNS config, else the fallback's."""
    if not (dns.servers or dns.searches or dns.options):
        return fallback
    lines = [f"nameserver {server}" for server in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def runtime_refusal(error: BerthError) -> RuntimeRefused | None:
    """A start error of the container service that is runc refusing the
    container, in containerd's CRI words ("failed to create containerd
    task: failed to create shim task: OCI runtime create failed: ...");
    None for any other error."""
    if not error.message.startswith(RUNTIME_CREATE_FAILED):
        return None
    return RuntimeRefused("failed to create containerd task: "
                          + error.message.removeprefix(RUNTIME_CREATE_FAILED))


async def start_container(peers: Peers, cid: str) -> None:
    """Start a berth container; runc's refusal is a RuntimeRefused."""
    try:
        await peers.containers.Start(container_pb2.StartContainerRequest(id=cid))
    except BerthError as exc:
        refusal = runtime_refusal(exc)
        if refusal is None:
            raise
        raise refusal from exc


def seccomp_option(profile: api_pb2.SecurityProfile | None, legacy_path: str) -> list[str]:
    """The security_opt for a CRI seccomp choice. Unset means unconfined, as
    in containerd; RuntimeDefault is Docker's default profile."""
    if profile is not None:
        if profile.profile_type == api_pb2.SecurityProfile.RuntimeDefault:
            return []
        if profile.profile_type == api_pb2.SecurityProfile.Unconfined:
            return ["seccomp=unconfined"]
        return [f"seccomp={_read_profile(profile.localhost_ref)}"]
    if legacy_path in ("runtime/default", "docker/default"):
        return []
    if legacy_path.startswith("localhost/"):
        return [f"seccomp={_read_profile(legacy_path.removeprefix('localhost/'))}"]
    return ["seccomp=unconfined"]


def _read_profile(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidArgument(f"cannot load seccomp profile {path!r}: {exc.strerror}") from exc


class Sandboxes:
    def __init__(self, config: Config, store: CriStore, peers: Peers, images: Images) -> None:
        self._root = config.service_dir("cri") / "sandboxes"
        self._root.mkdir(exist_ok=True)
        self._store = store
        self._peers = peers
        self._images = images
        self._sandbox_image = config.engine.get("cri-sandbox-image", DEFAULT_SANDBOX_IMAGE)
        self.sandboxes = {s.id: s for s in store.sandboxes()}
        self._locks: dict[str, asyncio.Lock] = {}
        self._starting: set[str] = set()           # pod names of RunPodSandbox calls under way
        self.creating: set[str] = set()            # their sandbox IDs (not in `sandboxes` yet)

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def get(self, ref: str) -> Sandbox:
        """The sandbox with this ID or unique ID prefix."""
        if ref in self.sandboxes:
            return self.sandboxes[ref]
        found = [s for s in self.sandboxes.values() if ref and s.id.startswith(ref)]
        if len(found) != 1:
            raise NotFound(f"pod sandbox {ref!r} not found")
        return found[0]

    def find(self, ref: str) -> Sandbox | None:
        try:
            return self.get(ref)
        except NotFound:
            return None

    def files(self, sandbox_id: str) -> dict[str, Path]:
        """The pod's /etc files its containers bind, by path in the container."""
        directory = self._root / sandbox_id
        return {"/etc/hostname": directory / "hostname", "/etc/hosts": directory / "hosts",
                "/etc/resolv.conf": directory / "resolv.conf"}

    # -- run -------------------------------------------------------------------

    async def run(self, config: api_pb2.PodSandboxConfig, runtime_handler: str) -> str:
        metadata = config.metadata
        if not (metadata.name and metadata.namespace):
            raise InvalidArgument("pod sandbox metadata needs a name and a namespace")
        refuse_nul(config, "pod sandbox config")
        name = pod_name(metadata)
        taken = [s.id for s in self.sandboxes.values() if pod_name(s.config.metadata) == name]
        if taken or name in self._starting:
            raise AlreadyExists(f"pod sandbox name {name!r} is reserved for "
                                f"{taken[0] if taken else 'a sandbox being made'}")
        sandbox = Sandbox(id=secrets.token_hex(32), config=config,
                          runtime_handler=runtime_handler, state=READY,
                          created_ns=time.time_ns())
        undo: Undo = []
        began = time.perf_counter()
        self._starting.add(name)
        self.creating.add(sandbox.id)
        try:
            await self._create(sandbox, undo)
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except BerthError as exc:
                    log.warning("cleanup of pod sandbox %s: %s", sandbox.id[:12], exc.message)
            raise
        finally:
            # No await from here to the record: a sweep sees the one or the other.
            self._starting.discard(name)
            self.creating.discard(sandbox.id)
        RUN_POD_SECONDS.observe(time.perf_counter() - began)
        self._store.save_sandbox(sandbox)
        self.sandboxes[sandbox.id] = sandbox
        return sandbox.id

    async def _create(self, sandbox: Sandbox, undo: Undo) -> None:
        config = sandbox.config
        image = await self._images.ensure(self._sandbox_image)
        directory = self._root / sandbox.id
        directory.mkdir()
        undo.append(lambda: asyncio.to_thread(shutil.rmtree, directory, True))
        hosts = Path("/etc/hosts").read_text()
        fallback_resolv = Path("/etc/resolv.conf").read_text()
        if not sandbox.host_network:
            network = await self._peers.network.CreateSandbox(
                self._network_request(sandbox))
            undo.append(lambda: self._peers.destroy_sandbox(sandbox.id))
            sandbox.netns_path = network.netns_path
            sandbox.ips = [e.ip_address for e in network.endpoints if e.ip_address] + [
                e.global_ipv6_address for e in network.endpoints if e.global_ipv6_address]
            hosts = network.hosts or hosts
            fallback_resolv = network.resolv_conf or fallback_resolv
        files = self.files(sandbox.id)
        files["/etc/hostname"].write_text(self.hostname(sandbox) + "\n")
        files["/etc/hosts"].write_text(hosts)
        files["/etc/resolv.conf"].write_text(resolv_conf(config.dns_config, fallback_resolv))
        created = await self._peers.containers.Create(
            self._pause_request(sandbox, image.id))
        sandbox.pause_id = created.id
        undo.append(lambda: self._remove_container(created.id))
        await start_container(self._peers, created.id)

    def _network_request(self, sandbox: Sandbox) -> network_pb2.CreateSandboxRequest:
        config = sandbox.config
        request = network_pb2.CreateSandboxRequest(
            container_id=sandbox.id, container_name=pod_name(config.metadata),
            hostname=self.hostname(sandbox), network_mode="cni", owner=OWNER,
            dns=config.dns_config.servers, dns_search=config.dns_config.searches,
            dns_options=config.dns_config.options,
            pod=network_pb2.PodNetwork(name=config.metadata.name,
                                       namespace=config.metadata.namespace,
                                       uid=config.metadata.uid))
        for port in config.port_mappings:
            if port.host_port:
                request.port_mappings.append(network_pb2.PortMapping(
                    container_port=f"{port.container_port}/{_PROTOCOLS[port.protocol]}",
                    host_ip=port.host_ip, host_port=str(port.host_port)))
        return request

    @staticmethod
    def hostname(sandbox: Sandbox) -> str:
        """The config's, else the node's (what a new UTS namespace starts with)."""
        return sandbox.config.hostname or socket.gethostname()

    def _pause_request(self, sandbox: Sandbox, image_id: str
                       ) -> container_pb2.CreateContainerRequest:
        config = sandbox.config
        linux = config.linux
        context = linux.security_context
        options = context.namespace_options
        host = container_pb2.HostConfig(
            network_mode="host" if sandbox.host_network
            else NETNS_PATH_MODE + sandbox.netns_path,
            ipc_mode="host" if options.ipc == api_pb2.NODE else "",
            pid_mode="host" if options.pid == api_pb2.NODE else "",
            privileged=context.privileged, readonly_rootfs=context.readonly_rootfs,
            sysctls=linux.sysctls, log_config=container_pb2.LogConfig(type="none"),
            resources=container_pb2.Resources(cgroup_parent=linux.cgroup_parent),
            security_opt=seccomp_option(
                context.seccomp if context.HasField("seccomp") else None,
                context.seccomp_profile_path))
        container = container_pb2.ContainerConfig(
            image=image_id, hostname=self.hostname(sandbox),
            labels=labels.for_sandbox(sandbox.id, config))
        if context.HasField("run_as_user"):
            container.user = str(context.run_as_user.value)
        return container_pb2.CreateContainerRequest(
            name=f"k8s_POD_{pod_name(config.metadata)}_{sandbox.id[:8]}", config=container,
            host_config=host)

    def update_resources(self, sandbox: Sandbox,
                         overhead: api_pb2.LinuxContainerResources | None,
                         resources: api_pb2.LinuxContainerResources | None) -> None:
        """Keep the pod's config current after a resize (containerd 2's
        UpdatePodSandboxResources): kubelet owns the pod's cgroup and has
        changed it before this call, so no cgroup is touched here; the pod's
        config (`crictl inspectp`) shows the new overhead and resources."""
        linux = sandbox.config.linux
        for name, value in (("overhead", overhead), ("resources", resources)):
            if value is None:
                linux.ClearField(name)
            else:
                getattr(linux, name).CopyFrom(value)
        self._store.save_sandbox(sandbox)

    # -- stop and remove -------------------------------------------------------

    async def stop(self, sandbox: Sandbox, container_ids: list[str]) -> None:
        """Kill the pod's containers and its pause container, and tear down
        its network; the sandbox stays, not ready."""
        for cid in [*container_ids, sandbox.pause_id]:
            await self.stop_container(cid, 0)
        if not sandbox.host_network:
            await self._peers.destroy_sandbox(sandbox.id)
        if sandbox.state != NOT_READY:
            sandbox.state = NOT_READY
            self._store.save_sandbox(sandbox)

    async def stop_container(self, cid: str, timeout: int) -> None:
        """Stop a berth container; one that is gone is stopped."""
        if not cid:
            return
        with contextlib.suppress(NotFound):
            await self._peers.containers.Stop(
                container_pb2.StopContainerRequest(id=cid, timeout=timeout))

    async def remove(self, sandbox: Sandbox, container_ids: list[str]) -> None:
        await self.stop(sandbox, container_ids)
        for cid in [*container_ids, sandbox.pause_id]:
            await self._remove_container(cid)
        await asyncio.to_thread(shutil.rmtree, self._root / sandbox.id, True)
        self._store.delete_sandbox(sandbox.id)
        self.sandboxes.pop(sandbox.id, None)
        self._locks.pop(sandbox.id, None)

    async def _remove_container(self, cid: str) -> None:
        if not cid:
            return
        with contextlib.suppress(NotFound):
            await self._peers.containers.Remove(
                container_pb2.RemoveContainerRequest(id=cid, force=True, remove_volumes=True))

    # -- status ----------------------------------------------------------------

    async def pause_state(self, sandbox: Sandbox) -> str:
        """The pause container's status ("" when it is gone)."""
        inspect = await self._peers.inspect_container(sandbox.pause_id)
        return inspect.state.status if inspect is not None else ""

    @staticmethod
    def _state(sandbox: Sandbox, pause_status: str) -> int:
        """Ready while the sandbox was not stopped and its pause container runs."""
        ready = sandbox.state == READY and pause_status == "running"
        return api_pb2.SANDBOX_READY if ready else api_pb2.SANDBOX_NOTREADY

    async def status(self, sandbox: Sandbox) -> api_pb2.PodSandboxStatus:
        config = sandbox.config
        status = api_pb2.PodSandboxStatus(
            id=sandbox.id, metadata=config.metadata,
            state=self._state(sandbox, await self.pause_state(sandbox)),
            created_at=sandbox.created_ns, labels=config.labels,
            annotations=config.annotations, runtime_handler=sandbox.runtime_handler)
        if sandbox.ips and not sandbox.host_network:
            status.network.ip = sandbox.ips[0]
            status.network.additional_ips.extend(
                api_pb2.PodIP(ip=ip) for ip in sandbox.ips[1:])
        status.linux.namespaces.options.CopyFrom(
            config.linux.security_context.namespace_options)
        return status

    @staticmethod
    def verbose_info(sandbox: Sandbox) -> dict[str, str]:
        """What `crictl inspectp` shows beside the status, as JSON under "info"."""
        return {"info": json.dumps({
            "pauseContainerID": sandbox.pause_id, "netnsPath": sandbox.netns_path,
            "runtimeHandler": sandbox.runtime_handler,
            "config": json_format.MessageToDict(sandbox.config)})}

    async def list(self, wanted: api_pb2.PodSandboxFilter | None) -> list[api_pb2.PodSandbox]:
        pause_states = await self._peers.container_states(labels.POD_SANDBOX)
        summaries = [api_pb2.PodSandbox(
            id=s.id, metadata=s.config.metadata,
            state=self._state(s, pause_states.get(s.pause_id, "")),
            created_at=s.created_ns, labels=s.config.labels, annotations=s.config.annotations,
            runtime_handler=s.runtime_handler)
            for s in list(self.sandboxes.values()) if _matches(s, wanted)]
        if wanted is not None and wanted.HasField("state"):
            summaries = [s for s in summaries if s.state == wanted.state.state]
        return summaries


def _matches(sandbox: Sandbox, wanted: api_pb2.PodSandboxFilter | None) -> bool:
    if wanted is None:
        return True
    if wanted.id and not sandbox.id.startswith(wanted.id):
        return False
    return all(sandbox.config.labels.get(k) == v for k, v in wanted.label_selector.items())
