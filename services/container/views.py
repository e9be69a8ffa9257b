"""What inspect and list show: Docker's shapes, filters and status texts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from berth.container.v1 import container_pb2
from berth.network.v1 import network_pb2
from berth.types.v1 import types_pb2
from services.common.errors import InvalidArgument
from services.common.filters import Filters
from services.container import configs, health
from services.container.containers import Manager, dir_size
from services.container.logs import rfc3339
from services.container.sandbox import sandbox_request
from services.container.store import Container

_FILTERS = {"id", "name", "label", "status", "ancestor", "exited", "before", "since",
            "network", "volume", "health", "is-task", "publish", "expose"}
_PRUNE_FILTERS = {"until", "label", "label!"}
_STATUSES = {"created", "restarting", "running", "removing", "paused", "exited", "dead"}


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, as in `docker ps` STATUS."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 2:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(container: Container) -> str:
    state = container.state
    now = time.time_ns()
    if state.status in ("running", "paused"):
        text = "Up " + human_duration((now - state.started_ns) / 1e9)
        text += health.status_suffix(state.health)
        return text + " (Paused)" if state.status == "paused" else text
    if state.status == "restarting":
        ago = human_duration((now - state.finished_ns) / 1e9)
        return f"Restarting ({state.exit_code}) {ago} ago"
    if state.status == "exited":
        if not state.finished_ns:
            return f"Exited ({state.exit_code})"
        return f"Exited ({state.exit_code}) {human_duration((now - state.finished_ns) / 1e9)} ago"
    return state.status.capitalize()


def _state(container: Container) -> container_pb2.ContainerState:
    state = container.state
    return container_pb2.ContainerState(
        status=state.status, running=state.status in ("running", "paused", "restarting"),
        paused=state.status == "paused", restarting=state.status == "restarting",
        oom_killed=state.oom_killed, dead=state.status == "dead", pid=state.pid,
        exit_code=state.exit_code, error=state.error, started_at=rfc3339(state.started_ns),
        finished_at=rfc3339(state.finished_ns), health=health.health_proto(state.health))


def _endpoint(endpoint: network_pb2.Endpoint) -> container_pb2.EndpointSettings:
    return container_pb2.EndpointSettings(
        network_id=endpoint.network_id, endpoint_id=endpoint.endpoint_id,
        gateway=endpoint.gateway, ip_address=endpoint.ip_address,
        ip_prefix_len=endpoint.ip_prefix_len, ipv6_gateway=endpoint.ipv6_gateway,
        global_ipv6_address=endpoint.global_ipv6_address,
        global_ipv6_prefix_len=endpoint.global_ipv6_prefix_len,
        mac_address=endpoint.mac_address, aliases=endpoint.aliases,
        dns_names=endpoint.dns_names, links=endpoint.links,
        ipam_config=container_pb2.EndpointIPAMConfig(
            ipv4_address=endpoint.ipv4_address_requested,
            ipv6_address=endpoint.ipv6_address_requested,
            link_local_ips=endpoint.link_local_ips),
        gw_priority=endpoint.gw_priority, driver_opts=endpoint.driver_opts)


async def network_settings(manager: Manager, container: Container
                           ) -> container_pb2.NetworkSettings:
    settings = container_pb2.NetworkSettings()
    sandbox = None
    if container.running:
        sandbox = await manager.peers.get_sandbox(container.id)
    if sandbox is not None:
        # As dockerd, ports are listed only while the container has its network.
        for port in container.config.exposed_ports:
            settings.ports[port].SetInParent()
        settings.sandbox_id = container.id
        settings.sandbox_key = sandbox.netns_path
        for endpoint in sandbox.endpoints:
            settings.networks[endpoint.network_name or endpoint.network_id].CopyFrom(
                _endpoint(endpoint))
        for port in sandbox.ports:
            settings.ports[port.container_port].bindings.append(container_pb2.PortBinding(
                host_ip=port.host_ip, host_port=str(port.host_port)))
        return settings
    plan = await manager.peers.plan_sandbox(sandbox_request(
        container.id, container.name, container.config, container.host_config,
        container.networking_config))
    if plan is not None:
        requested = container.networking_config.endpoints_config
        for endpoint in plan.endpoints:
            planned = settings.networks[endpoint.network_name]
            planned.CopyFrom(_planned_endpoint(endpoint))
            if endpoint.network_name in requested:
                planned.mac_address = requested[endpoint.network_name].mac_address
        return settings
    for name, requested in container.networking_config.endpoints_config.items():
        settings.networks[name].CopyFrom(container_pb2.EndpointSettings(
            ipam_config=requested.ipam_config, aliases=requested.aliases,
            links=requested.links, mac_address=requested.mac_address,
            gw_priority=requested.gw_priority))
    mode = container.host_config.network_mode
    if not settings.networks and mode and not mode.startswith("container:"):
        settings.networks[mode].SetInParent()
    return settings


def _planned_endpoint(endpoint: network_pb2.Endpoint) -> container_pb2.EndpointSettings:
    """What Docker keeps of an endpoint while the container does not run: its config."""
    return container_pb2.EndpointSettings(
        network_id=endpoint.network_id, aliases=endpoint.aliases,
        dns_names=endpoint.dns_names, links=endpoint.links,
        ipam_config=container_pb2.EndpointIPAMConfig(
            ipv4_address=endpoint.ipv4_address_requested))


async def inspect(manager: Manager, ref: str, size: bool) -> container_pb2.ContainerInspect:
    container = manager.get(ref)
    bundle = manager.bundle(container)
    command = configs.command(container.config)
    result = container_pb2.ContainerInspect(
        id=container.id, created=rfc3339(container.created_ns),
        path=command[0] if command else "", args=command[1:], state=_state(container),
        image=container.image_id, resolv_conf_path=str(bundle.path / "resolv.conf"),
        hostname_path=str(bundle.path / "hostname"), hosts_path=str(bundle.path / "hosts"),
        log_path=str(bundle.log), name="/" + container.name,
        restart_count=container.state.restart_count, driver="overlay2", platform="linux",
        host_config=container.host_config, config=container.config,
        graph_driver_data={
            "LowerDir": ":".join(container.lower_dirs),
            "UpperDir": str(bundle.path / "upper"), "WorkDir": str(bundle.path / "work"),
            "MergedDir": str(bundle.rootfs)},
        network_settings=await network_settings(manager, container),
        mounts=container.mounts.mount_points())
    if size:
        result.size_rw, result.size_root_fs = await _sizes(manager, container)
    return result


async def _sizes(manager: Manager, container: Container) -> tuple[int, int]:
    upper = manager.bundle(container).path / "upper"
    rw = await asyncio.to_thread(dir_size, upper)
    lower = 0
    for directory in container.lower_dirs:
        lower += await asyncio.to_thread(dir_size, Path(directory))
    return rw, rw + lower


def _list_filters(message: types_pb2.Filters) -> Filters:
    filters = Filters.from_message(message).checked(_FILTERS)
    for value in filters.get("status"):
        if value not in _STATUSES:
            raise InvalidArgument(f"invalid filter 'status={value}'")
    return filters


def _port_key(value: str) -> str:
    """`80` or `80/udp` as the "80/tcp" keys of ExposedPorts and PortBindings."""
    return value if "/" in value else f"{value}/tcp"


def _on_network(networks: Mapping[str, container_pb2.EndpointSettings], wanted: str) -> bool:
    """Docker's `network` filter: a network's name, or a prefix of its ID."""
    return wanted in networks or any(
        e.network_id and e.network_id.startswith(wanted) for e in networks.values())


def matcher(manager: Manager, filters: types_pb2.Filters) -> Callable[[Container], bool]:
    wanted = _list_filters(filters)
    before = [manager.get(ref).created_ns for ref in wanted.get("before")]
    since = [manager.get(ref).created_ns for ref in wanted.get("since")]

    def keep(container: Container) -> bool:
        checks = {
            "id": lambda v: container.id.startswith(v),
            "status": lambda v: container.state.status == v,
            "ancestor": lambda v: v in (container.image, container.image_id)
            or container.image_id.removeprefix("sha256:").startswith(v.removeprefix("sha256:"))
            or container.image == v.removesuffix(":latest"),
            "exited": lambda v: container.state.status == "exited"
            and str(container.state.exit_code) == v,
            "health": lambda v: v == health.filter_status(container.state.health,
                                                          container.config.healthcheck),
            "volume": lambda v: any(v in (m.name, m.source, m.destination)
                                    for m in container.mounts.mount_points()),
        }
        checks["expose"] = lambda v: _port_key(v) in container.config.exposed_ports
        checks["publish"] = lambda v: any(
            _port_key(v) == port or v.split("/")[0] in {b.host_port for b in bindings.bindings}
            for port, bindings in container.host_config.port_bindings.items())
        checks["is-task"] = lambda v: v == "false"
        if not all(wanted.match_any(key, check) for key, check in checks.items()):
            return False
        if not wanted.match_name("name", container.name, "/" + container.name):
            return False
        if not wanted.match_labels(container.config.labels):
            return False
        if any(container.created_ns >= ns for ns in before):
            return False
        return not any(container.created_ns <= ns for ns in since)

    return keep


async def summary(manager: Manager, container: Container, size: bool
                  ) -> container_pb2.ContainerSummary:
    settings = await network_settings(manager, container)
    result = container_pb2.ContainerSummary(
        id=container.id, names=["/" + container.name], image=container.image,
        image_id=container.image_id, command=" ".join(configs.command(container.config)),
        created=container.created_ns // 1_000_000_000, labels=container.config.labels,
        state=container.state.status, status=status_text(container),
        network_mode=container.host_config.network_mode, networks=settings.networks,
        mounts=container.mounts.mount_points())
    for port, bindings in settings.ports.items():
        number, _, proto = port.partition("/")
        if not bindings.bindings:
            result.ports.append(container_pb2.PortSummary(private_port=int(number),
                                                          type=proto or "tcp"))
        for binding in bindings.bindings:
            result.ports.append(container_pb2.PortSummary(
                ip=binding.host_ip, private_port=int(number),
                public_port=int(binding.host_port or 0), type=proto or "tcp"))
    if size:
        result.size_rw, result.size_root_fs = await _sizes(manager, container)
    return result


async def list_containers(manager: Manager, request: container_pb2.ListContainersRequest
                          ) -> list[container_pb2.ContainerSummary]:
    keep = matcher(manager, request.filters)
    every = request.all or request.limit > 0 or "status" in request.filters.filters
    chosen = [c for c in sorted(manager.containers.values(), key=lambda c: -c.created_ns)
              if (every or c.running) and keep(c)]
    networks = Filters.from_message(request.filters).get("network")
    summaries = []
    for container in chosen:
        if request.limit > 0 and len(summaries) == request.limit:
            break
        found = await summary(manager, container, request.size)
        if not networks or any(_on_network(found.networks, n) for n in networks):
            summaries.append(found)
    return summaries


def prune_filter(message: types_pb2.Filters) -> Callable[[Container], bool]:
    """Which stopped containers prune keeps (filters until, label, label!)."""
    filters = Filters.from_message(message).checked(_PRUNE_FILTERS)
    until = filters.until_ns()

    def keep(container: Container) -> bool:
        if until is not None and container.created_ns >= until:
            return True
        return not filters.match_labels(container.config.labels)

    return keep
