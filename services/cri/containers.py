"""CRI containers: berth containers that join their pod's pause container
(network, IPC, UTS and, for a pod PID namespace, PID), log in the CRI format
where kubelet asks, and are labelled with their sandbox."""

from __future__ import annotations

import calendar
import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from google.protobuf import json_format

from berth.container.v1 import container_pb2
from k8s.runtime.v1 import api_pb2
from services.common.errors import (
    AlreadyExists,
    BerthError,
    Conflict,
    InvalidArgument,
    NotFound,
    PeerUnavailable,
    Unimplemented,
)
from services.common.validation import refuse_nul
from services.cri import labels
from services.cri.imagevolumes import ImageVolumes
from services.cri.peers import Peers
from services.cri.sandboxes import Sandboxes, pod_name, seccomp_option, start_container
from services.cri.store import READY, ContainerRecord, CriStore, Sandbox

_STATES = {"created": api_pb2.CONTAINER_CREATED, "running": api_pb2.CONTAINER_RUNNING,
           "paused": api_pb2.CONTAINER_RUNNING, "restarting": api_pb2.CONTAINER_RUNNING,
           "exited": api_pb2.CONTAINER_EXITED, "dead": api_pb2.CONTAINER_EXITED,
           "removing": api_pb2.CONTAINER_EXITED}
_PROPAGATION = {api_pb2.PROPAGATION_PRIVATE: "rprivate",
                api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
                api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared"}
_NEVER = "0001-01-01T00:00:00Z"
# containerd's exit code and reason of a container that failed to start.
_START_ERROR_EXIT_CODE = 128
_START_ERROR_REASON = "StartError"


def parse_time(stamp: str) -> int:
    """Docker's RFC 3339 time (nanoseconds, Z) -> ns since the epoch; 0 for never."""
    if not stamp or stamp == _NEVER:
        return 0
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)


def _namespace_mode(mode: int, pause: str, target: str = "") -> str:
    """A CRI namespace choice as a berth container's namespace mode."""
    if mode == api_pb2.NODE:
        return "host"
    if mode == api_pb2.POD:
        return f"container:{pause}"
    if mode == api_pb2.TARGET:
        return f"container:{target}"
    return ""


def _user(context: api_pb2.LinuxContainerSecurityContext) -> str:
    user = (str(context.run_as_user.value) if context.HasField("run_as_user")
            else context.run_as_username)
    if context.HasField("run_as_group"):
        if not user:
            raise InvalidArgument("run_as_group needs run_as_user or run_as_username")
        user += f":{context.run_as_group.value}"
    return user


def process_user(pid: int) -> api_pb2.LinuxContainerUser | None:
    """The identity the container's first process runs with (its uid, gid
    and groups, the gid among them as containerd lists it); None once gone."""
    try:
        fields = dict(line.split(":", 1) for line in
                      Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    except OSError:
        return None
    uid, gid = int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])
    groups = sorted({gid, *(int(g) for g in fields.get("Groups", "").split())})
    return api_pb2.LinuxContainerUser(uid=uid, gid=gid, supplemental_groups=groups)


def volume_key(sandbox_id: str, metadata: api_pb2.ContainerMetadata) -> str:
    """Names a container's image volumes before the container exists (the
    name and attempt are unique in the pod)."""
    name = f"{sandbox_id}/{metadata.name}/{metadata.attempt}"
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def resources(linux: api_pb2.LinuxContainerResources) -> container_pb2.Resources:
    return container_pb2.Resources(
        cpu_period=linux.cpu_period, cpu_quota=linux.cpu_quota, cpu_shares=linux.cpu_shares,
        memory=linux.memory_limit_in_bytes, memory_swap=linux.memory_swap_limit_in_bytes,
        cpuset_cpus=linux.cpuset_cpus, cpuset_mems=linux.cpuset_mems,
        hugepage_limits=[container_pb2.HugepageLimit(page_size=h.page_size, limit=h.limit)
                         for h in linux.hugepage_limits],
        unified=linux.unified)


def merged_resources(current: api_pb2.LinuxContainerResources,
                     update: api_pb2.LinuxContainerResources) -> api_pb2.LinuxContainerResources:
    """The container's resources after an update, which changes what it sets
    (a zero or an empty list leaves a limit as it was, as in containerd)."""
    merged = api_pb2.LinuxContainerResources()
    merged.CopyFrom(current)
    for field, value in update.ListFields():
        if field.name == "unified":
            merged.unified.update(value)
        elif field.name == "hugepage_limits":
            del merged.hugepage_limits[:]
            merged.hugepage_limits.extend(value)
        else:
            setattr(merged, field.name, value)
    return merged


def pod_log_path(log_directory: str, log_path: str) -> str:
    """The container's log file: its log_path joined to the pod's
    log_directory as containerd joins them (an absolute log_path too is
    under the directory), and never outside that directory."""
    directory = os.path.normpath(log_directory)
    joined = os.path.normpath(f"{directory}/{log_path}")
    if (not os.path.isabs(directory) or joined == directory
            or os.path.commonpath([joined, directory]) != directory):
        raise InvalidArgument(f"log path {log_path!r} is not a file in the pod's log "
                              f"directory {log_directory!r}")
    return joined


class Containers:
    def __init__(self, store: CriStore, peers: Peers, sandboxes: Sandboxes,
                 volumes: ImageVolumes) -> None:
        self._store = store
        self._peers = peers
        self._sandboxes = sandboxes
        self._volumes = volumes
        self.records = {r.id: r for r in store.containers()}
        # Configs of CreateContainer calls under way, by image-volume key
        # (their image volumes are leased before the record exists).
        self.creating: dict[str, api_pb2.ContainerConfig] = {}

    def get(self, ref: str) -> ContainerRecord:
        if ref in self.records:
            return self.records[ref]
        found = [r for r in self.records.values() if ref and r.id.startswith(ref)]
        if len(found) != 1:
            raise NotFound(f"container {ref!r} not found")
        return found[0]

    def find(self, ref: str) -> ContainerRecord | None:
        try:
            return self.get(ref)
        except NotFound:
            return None

    def of_sandbox(self, sandbox_id: str) -> list[str]:
        return [r.id for r in self.records.values() if r.sandbox_id == sandbox_id]

    # -- create ----------------------------------------------------------------

    async def create(self, sandbox_id: str, config: api_pb2.ContainerConfig) -> str:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox.state != READY:
            raise Conflict(f"pod sandbox {sandbox.id} is not ready")
        if not config.metadata.name:
            raise InvalidArgument("container metadata needs a name")
        refuse_nul(config, "container config")
        if any(r.sandbox_id == sandbox.id and r.config.metadata.name == config.metadata.name
               and r.config.metadata.attempt == config.metadata.attempt
               for r in self.records.values()):
            raise AlreadyExists(f"container {config.metadata.name!r} attempt "
                                f"{config.metadata.attempt} already exists in pod {sandbox.id}")
        image = await self._peers.inspect_image(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found")
        log_path = ""
        if sandbox.config.log_directory and config.log_path:
            log_path = pod_log_path(sandbox.config.log_directory, config.log_path)
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stored = api_pb2.ContainerConfig()
        stored.CopyFrom(config)
        key = volume_key(sandbox.id, config.metadata)
        self.creating[key] = stored
        try:
            sources = await self._mount_image_volumes(key, stored)
            request = self._create_request(sandbox, config, image.id, log_path, sources)
            created = await self._peers.containers.Create(request)
        except BaseException:
            await self._volumes.release(key)
            raise
        finally:
            # No await from here to the record: a sweep sees the one or the other.
            self.creating.pop(key, None)
        record = ContainerRecord(id=created.id, sandbox_id=sandbox.id, config=stored,
                                 image_id=image.id, log_path=log_path,
                                 created_ns=time.time_ns())
        self._store.save_container(record)
        self.records[record.id] = record
        return record.id

    async def _mount_image_volumes(self, key: str, config: api_pb2.ContainerConfig
                                   ) -> dict[int, str]:
        """Host paths of the config's image volumes by mount index; each
        mount's image_ref becomes the image's ID, as ContainerStatus shows it."""
        sources = {}
        for index, mount in enumerate(config.mounts):
            if mount.image.image:
                sources[index], mount.image.image_ref = await self._volumes.mount(
                    key, index, mount)
        return sources

    def _create_request(self, sandbox: Sandbox, config: api_pb2.ContainerConfig,
                        image_id: str, log_path: str, sources: dict[int, str]
                        ) -> container_pb2.CreateContainerRequest:
        context = config.linux.security_context
        options = context.namespace_options
        pause = sandbox.pause_id
        body = container_pb2.ContainerConfig(
            image=image_id, hostname=self._sandboxes.hostname(sandbox),
            env=[f"{kv.key}={kv.value.decode(errors='replace')}" for kv in config.envs],
            working_dir=config.working_dir, tty=config.tty, open_stdin=config.stdin,
            stdin_once=config.stdin_once, attach_stdin=config.stdin, attach_stdout=True,
            attach_stderr=True, user=_user(context),
            labels=labels.for_container(sandbox.id, config))
        if config.command:
            body.entrypoint.values.extend(config.command)
        if config.command or config.args:
            body.cmd.values.extend(config.args)
        host = container_pb2.HostConfig(
            # A host-network pod has the node's UTS namespace: joining it
            # through the pause container would let runc set the node's hostname.
            network_mode=f"container:{pause}",
            uts_mode="host" if sandbox.host_network else f"container:{pause}",
            ipc_mode=_namespace_mode(options.ipc, pause) or f"container:{pause}",
            pid_mode=_namespace_mode(options.pid, pause, options.target_id),
            privileged=context.privileged, readonly_rootfs=context.readonly_rootfs,
            cap_add=context.capabilities.add_capabilities,
            cap_drop=context.capabilities.drop_capabilities,
            group_add=[str(g) for g in context.supplemental_groups],
            strict_supplemental_groups=context.supplemental_groups_policy == api_pb2.Strict,
            masked_paths=context.masked_paths, readonly_paths=context.readonly_paths,
            oom_score_adj=config.linux.resources.oom_score_adj,
            resources=resources(config.linux.resources),
            log_config=container_pb2.LogConfig(type="k8s-file", config={"path": log_path})
            if log_path else container_pb2.LogConfig(type="none"),
            security_opt=seccomp_option(
                context.seccomp if context.HasField("seccomp") else None,
                context.seccomp_profile_path))
        if context.no_new_privs:
            host.security_opt.append("no-new-privileges")
        for device in config.devices:
            host.resources.devices.append(container_pb2.DeviceMapping(
                path_on_host=device.host_path, path_in_container=device.container_path,
                cgroup_permissions=device.permissions))
        host.resources.cgroup_parent = sandbox.config.linux.cgroup_parent
        self._add_mounts(host, sandbox, config, sources)
        return container_pb2.CreateContainerRequest(
            name=f"k8s_{config.metadata.name}_{pod_name(sandbox.config.metadata)}"
                 f"_{config.metadata.attempt}_{sandbox.id[:8]}",
            config=body, host_config=host)

    def _add_mounts(self, host: container_pb2.HostConfig, sandbox: Sandbox,
                    config: api_pb2.ContainerConfig, sources: dict[int, str]) -> None:
        """kubelet's mounts (a missing host directory is made, as containerd
        does; an image volume's source is its mount), then the pod's /etc
        files where kubelet mounts none."""
        for index, mount in enumerate(config.mounts):
            source = Path(sources.get(index) or mount.host_path)
            if not source.exists():
                source.mkdir(parents=True)
            host.mounts.append(container_pb2.Mount(
                type="bind", source=str(source), target=mount.container_path,
                read_only=mount.readonly,
                bind_options=container_pb2.BindOptions(
                    propagation=_PROPAGATION[mount.propagation],
                    # kubelet's readonly alone is containerd's plain "ro".
                    read_only_non_recursive=mount.readonly and not mount.recursive_read_only,
                    read_only_force_recursive=mount.recursive_read_only)))
        taken = {m.container_path for m in config.mounts}
        for target, source in self._sandboxes.files(sandbox.id).items():
            if target not in taken:
                host.mounts.append(container_pb2.Mount(
                    type="bind", source=str(source), target=target,
                    read_only=config.linux.security_context.readonly_rootfs))

    # -- lifecycle -------------------------------------------------------------

    async def start(self, cid: str) -> None:
        """Start the container. One that fails to start has exited, with the
        error as its status' message (containerd's StartError): kubelet
        makes a new attempt rather than starting it again."""
        record = self.get(cid)
        if record.start_error:
            raise Conflict(f"container {record.id} is in CONTAINER_EXITED state: "
                           f"it failed to start")
        try:
            await start_container(self._peers, record.id)
        except (NotFound, PeerUnavailable):
            raise
        except BerthError as exc:
            record.start_error, record.start_failed_ns = exc.message, time.time_ns()
            self._store.save_container(record)
            raise

    async def stop(self, cid: str, timeout: int) -> None:
        """Stop the container; an unknown one is stopped already (CRI)."""
        record = self.find(cid)
        if record is not None:
            await self._sandboxes.stop_container(record.id, max(timeout, 0))

    async def remove(self, cid: str) -> None:
        """Remove the container; an unknown one is removed already (CRI)."""
        record = self.find(cid)
        if record is None:
            return
        with contextlib.suppress(NotFound):
            await self._peers.containers.Remove(
                container_pb2.RemoveContainerRequest(id=record.id, force=True,
                                                     remove_volumes=True))
        await self.forget(record.id)

    async def forget(self, cid: str) -> None:
        """Drop the record of a container that is gone, and its image volumes."""
        record = self.records.pop(cid, None)
        if record is not None:
            await self._volumes.release(volume_key(record.sandbox_id, record.config.metadata))
        self._store.delete_container(cid)

    async def reopen_log(self, cid: str) -> None:
        """conmon starts the log file anew, after kubelet moved it away."""
        record = self.get(cid)
        if not record.log_path:
            raise Conflict(f"container {record.id} has no log path")
        await self._peers.containers.ReopenLog(
            container_pb2.ContainerRef(id=record.id))

    async def update(self, cid: str, linux: api_pb2.LinuxContainerResources) -> None:
        """Change the container's limits in place; ContainerStatus reports them."""
        record = self.get(cid)
        await self._peers.containers.Update(
            container_pb2.UpdateContainerRequest(id=record.id, resources=resources(linux)))
        record.config.linux.resources.CopyFrom(
            merged_resources(record.config.linux.resources, linux))
        self._store.save_container(record)

    def checkpoint(self, cid: str) -> None:
        """CheckpointContainer is not implemented (docs/cri.md): an unknown
        container is NOT_FOUND, a known one UNIMPLEMENTED, the code of a
        runtime without checkpoints."""
        record = self.get(cid)
        raise Unimplemented(f"cannot checkpoint container {record.id}: berth does not "
                            "implement container checkpoints (CRIU through runc)")

    # -- status ----------------------------------------------------------------

    async def status(self, cid: str) -> api_pb2.ContainerStatus:
        record = self.get(cid)
        inspect = await self._peers.inspect_container(record.id)
        if inspect is None:
            await self.forget(record.id)
            raise NotFound(f"container {cid!r} not found")
        state = inspect.state
        status = api_pb2.ContainerStatus(
            id=record.id, metadata=record.config.metadata,
            state=_state_of(record, state.status),
            created_at=record.created_ns, started_at=parse_time(state.started_at),
            finished_at=parse_time(state.finished_at), exit_code=state.exit_code,
            image=record.config.image, image_ref=record.image_id, image_id=record.image_id,
            labels=record.config.labels, annotations=record.config.annotations,
            mounts=record.config.mounts, log_path=record.log_path)
        if record.start_error:
            status.reason, status.message = _START_ERROR_REASON, record.start_error
            status.exit_code, status.finished_at = (_START_ERROR_EXIT_CODE,
                                                    record.start_failed_ns)
        elif status.state == api_pb2.CONTAINER_EXITED:
            status.reason = ("OOMKilled" if state.oom_killed
                             else "Completed" if state.exit_code == 0 else "Error")
            status.message = state.error
        status.resources.linux.CopyFrom(record.config.linux.resources)
        if state.pid:
            user = process_user(state.pid)
            if user is not None:
                status.user.linux.CopyFrom(user)
        return status

    def verbose_info(self, cid: str) -> dict[str, str]:
        """What `crictl inspect` shows beside the status, as JSON under "info"."""
        record = self.get(cid)
        return {"info": json.dumps({
            "sandboxID": record.sandbox_id, "imageID": record.image_id,
            "config": json_format.MessageToDict(record.config)})}

    async def list(self, wanted: api_pb2.ContainerFilter | None) -> list[api_pb2.Container]:
        """The containers kubelet asks for; one whose berth container is gone
        (removed behind our back) is not listed."""
        states = await self._peers.container_states(labels.CONTAINER)
        found = [api_pb2.Container(
            id=r.id, pod_sandbox_id=r.sandbox_id, metadata=r.config.metadata,
            image=r.config.image, image_ref=r.image_id, image_id=r.image_id,
            state=_state_of(r, states[r.id]),
            created_at=r.created_ns, labels=r.config.labels, annotations=r.config.annotations)
            for r in list(self.records.values()) if r.id in states and _matches(r, wanted)]
        if wanted is not None and wanted.HasField("state"):
            found = [c for c in found if c.state == wanted.state.state]
        return found

    # -- inside ----------------------------------------------------------------

    async def exec_sync(self, cid: str, cmd: list[str], timeout: int
                        ) -> tuple[bytes, bytes, int]:
        """Run `cmd` in the container; its stdout, stderr and exit code."""
        record = self.get(cid)
        if not cmd:
            raise InvalidArgument("exec needs a command")
        created = await self._peers.containers.ExecCreate(
            container_pb2.ExecCreateRequest(container_id=record.id, config=container_pb2.
                                            ExecConfig(cmd=cmd, attach_stdout=True,
                                                       attach_stderr=True)))
        return await self._collect(created.id, timeout)

    async def _collect(self, exec_id: str, timeout: int) -> tuple[bytes, bytes, int]:
        """The exec's output and exit code; past `timeout` seconds (> 0) the
        container service kills it and answers DEADLINE_EXCEEDED."""
        stdout, stderr, exit_code = bytearray(), bytearray(), -1
        session = self._peers.containers.ExecStart()
        try:
            await session.write(container_pb2.ExecStartRequest(
                options=container_pb2.ExecStartOptions(exec_id=exec_id,
                                                       timeout_seconds=max(timeout, 0))))
            await session.done_writing()
            async for frame in session:
                target = stderr if frame.stream == container_pb2.IOFrame.STDERR else stdout
                target += frame.data
                if frame.HasField("exit_code"):
                    exit_code = frame.exit_code
        finally:
            session.cancel()
        if exit_code < 0:
            instance = await self._peers.containers.ExecInspect(
                container_pb2.ExecInspectRequest(exec_id=exec_id))
            exit_code = instance.exit_code
        return bytes(stdout), bytes(stderr), exit_code


def _state_of(record: ContainerRecord, berth_status: str) -> int:
    """The CRI state of a container whose berth container has this status;
    one that failed to start has exited (its berth container stays created)."""
    if record.start_error:
        return api_pb2.CONTAINER_EXITED
    return _STATES.get(berth_status, api_pb2.CONTAINER_UNKNOWN)


def _matches(record: ContainerRecord, wanted: api_pb2.ContainerFilter | None) -> bool:
    if wanted is None:
        return True
    if wanted.id and not record.id.startswith(wanted.id):
        return False
    if wanted.pod_sandbox_id and not record.sandbox_id.startswith(wanted.pod_sandbox_id):
        return False
    return all(record.config.labels.get(k) == v for k, v in wanted.label_selector.items())
