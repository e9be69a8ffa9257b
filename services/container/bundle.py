"""Bundle preparation before a start: mount the rootfs, fill volumes, get a
network sandbox (with the links' hosts entries), write the container's
/etc files and config.json; and what conmon is told about stdio and logs.
Each step that leaves something behind pushes its undo."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common.errors import Conflict, Internal
from services.common.netns import NETNS_PATH_MODE
from services.container import (
    cgroups,
    configs,
    logrotate,
    mounts,
    rootfs,
    sandbox,
    spec,
)
from services.container.configs import replace_or_append_env
from services.container.links import Link
from services.container.peers import Peers
from services.container.runtime import Bundle, ConmonOptions
from services.container.store import Container

# Statically linked: they run in any image.
_INIT_BINARIES = ("/usr/bin/tini-static", "/usr/bin/catatonit")
DEFAULT_PATH_ENV = f"PATH={spec.DEFAULT_PATH}"

Undo = list[Callable[[], Awaitable[None]]]
Find = Callable[[str], Container]


class BundleBuilder:
    def __init__(self, peers: Peers, instance_prefix: str, default_init: bool) -> None:
        self.peers = peers
        self._prefix = instance_prefix
        self._default_init = default_init

    async def prepare(self, container: Container, bundle: Bundle, undo: Undo,
                      find: Find) -> None:
        """Mount the rootfs, get a network sandbox, write config.json.

        `find` looks up the other containers this one joins or links to.
        """
        config, host = container.config, container.host_config
        await rootfs.mount_overlay(container.lower_dirs, bundle.path / "upper",
                                   bundle.path / "work", bundle.rootfs)
        undo.append(lambda: rootfs.unmount(bundle.rootfs))
        await mounts.copy_up(container.mounts, bundle.rootfs)
        user = rootfs.resolve_user(bundle.rootfs, config.user, list(host.group_add),
                                   not host.strict_supplemental_groups)
        namespace_paths, host_namespaces = _shared_namespaces(host, find)
        other_netns = ""
        if host.network_mode.startswith("container:"):
            other = running_peer(find, host.network_mode.partition(":")[2])
            other_netns = f"/proc/{other.state.pid}/ns/net"
        elif host.network_mode.startswith(NETNS_PATH_MODE):
            other_netns = host.network_mode.removeprefix(NETNS_PATH_MODE)
        request = sandbox.sandbox_request(container.id, container.name, config, host,
                                          container.networking_config, other_netns)
        link_hosts, link_env = await self._linked(container, find)
        request.extra_hosts.extend(link_hosts)
        files = await sandbox.create(self.peers, request)
        undo.append(lambda: self.peers.destroy_sandbox(container.id))
        etc = {"/etc/hostname": bundle.path / "hostname", "/etc/hosts": bundle.path / "hosts",
               "/etc/resolv.conf": bundle.path / "resolv.conf"}
        etc["/etc/hostname"].write_text((config.hostname or _host_name()) + "\n")
        etc["/etc/hosts"].write_text(files.hosts)
        etc["/etc/resolv.conf"].write_text(files.resolv_conf)
        if host.network_mode.startswith("container:"):
            del etc["/etc/hostname"]
        inputs = spec.SpecInputs(
            container_id=container.id, args=configs.command(config),
            env=_process_env(config, config.hostname or _host_name(), link_env, user.home),
            user=user, rootfs=bundle.rootfs,
            cgroups_path=cgroups.cgroups_path(self._prefix, container.id,
                                              host.resources.cgroup_parent),
            netns_path=files.netns_path, files=etc, namespace_paths=namespace_paths,
            host_namespaces=host_namespaces, init_binary=_init_binary(host, self._default_init),
            extra_mounts=container.mounts.oci_mounts)
        document = spec.build(config, host, inputs)
        (bundle.path / "config.json").write_text(json.dumps(document))

    async def _linked(self, container: Container, find: Find) -> tuple[list[str], list[str]]:
        """The /etc/hosts entries and environment the container's links give
        it: each linked container must run, and its address is the one on
        the default bridge."""
        hosts: list[str] = []
        env: list[str] = []
        for text in container.host_config.links:
            link = Link.parse(text)
            target = find(link.target)
            if target.state.status != "running":
                raise Conflict(f"Cannot link to a non running container: /{target.name} AS "
                               f"/{container.name}/{link.alias}")
            sandbox_view = await self.peers.get_sandbox(target.id)
            ips = [e.ip_address for e in (sandbox_view.endpoints if sandbox_view else [])
                   if e.network_name == "bridge" and e.ip_address]
            if not ips:
                continue   # not on the default bridge: a link has nothing to name
            hosts.append(link.hosts_entry(target.config.hostname or target.id[:12], ips[0]))
            env += link.environment(container.name, ips[0], list(target.config.exposed_ports),
                                    list(target.config.env))
        return hosts, env


def conmon_options(container: Container) -> ConmonOptions:
    config = container.config
    # Docker closes stdin when the first client detaches only without a TTY.
    log_config = container.host_config.log_config
    return ConmonOptions(tty=config.tty, stdin=config.open_stdin,
                         stdin_once=config.stdin_once and not config.tty,
                         log_size_max=logrotate.conmon_size_cap(log_config),
                         keep_log=log_config.type != "none")


def running_peer(find: Find, ref: str) -> Container:
    other = find(ref)
    if other.state.status != "running":
        raise Conflict(f"cannot join network namespace of a non running container: "
                       f"container {other.id} is {other.state.status}")
    return other


def _shared_namespaces(host: container_pb2.HostConfig, find: Find
                       ) -> tuple[dict[str, str], set[str]]:
    paths: dict[str, str] = {}
    on_host: set[str] = set()
    for kind, mode in (("ipc", host.ipc_mode), ("pid", host.pid_mode),
                       ("uts", host.uts_mode)):
        if mode == "host":
            on_host.add(kind)
        elif mode.startswith("container:"):
            other = running_peer(find, mode.partition(":")[2])
            paths[kind] = f"/proc/{other.state.pid}/ns/{kind}"
    if host.network_mode == "host":
        on_host.add("uts")
    return paths, on_host


def _init_binary(host: container_pb2.HostConfig, default: bool) -> str | None:
    """The init to run as PID 1: HostConfig.Init, else the engine's `init` setting."""
    if not (host.init if host.HasField("init") else default):
        return None
    for candidate in _INIT_BINARIES:
        if Path(candidate).exists():
            return candidate
    raise Internal("no init binary (tini or catatonit) is installed")


def _process_env(config: container_pb2.ContainerConfig, hostname: str, link_env: list[str],
                 home: str) -> list[str]:
    """What Docker puts in a container's environment: PATH, HOSTNAME, TERM
    with a TTY and the links' variables, each overridden (or, named without
    a value, unset) by the config's image and user variables, and HOME when
    none is set."""
    env = replace_or_append_env(
        [DEFAULT_PATH_ENV, f"HOSTNAME={hostname}", *(["TERM=xterm"] if config.tty else []),
         *link_env], list(config.env))
    if not any(variable.startswith("HOME=") for variable in env):
        env.append(f"HOME={home}")
    return env


def _host_name() -> str:
    return Path("/proc/sys/kernel/hostname").read_text().strip()
