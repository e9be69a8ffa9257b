"""Docker's JSON views of a container (inspect and list) from the typed protos.

Keys, nulls and defaults follow what dockerd answers, so `docker inspect
--format` templates and the SDKs find every field where they look for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from berth.container.v1 import container_pb2 as pb
from berth.image.v1 import image_pb2
from services.gateway.params import LATEST_API_VERSION, ApiVersion

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
# What an unprivileged container gets when it asks for nothing (Docker's defaults).
DEFAULT_MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"]
BRIDGE = "bridge"
BUILTIN_NETWORK_MODES = frozenset({"default", BRIDGE, "host", "none"})


def _or_null(values: Any) -> list[Any] | None:
    """Go's nil slice: an empty repeated field is null."""
    return list(values) if values else None


def _set_map(keys: Any) -> dict[str, dict[str, Any]] | None:
    """Docker's map[string]struct{} (ExposedPorts, Volumes)."""
    return {key: {} for key in keys} if keys else None


def _optional(message: Message, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def network_mode(value: str) -> str:
    return BRIDGE if value in ("", "default") else value


def healthcheck_json(health: image_pb2.HealthConfig, version: ApiVersion) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if health.HasField("test"):
        out["Test"] = list(health.test.values)
    for key, value in (("Interval", health.interval_ns), ("Timeout", health.timeout_ns),
                       ("StartPeriod", health.start_period_ns),
                       ("StartInterval", health.start_interval_ns if version >= (1, 44) else 0),
                       ("Retries", health.retries)):
        if value:
            out[key] = value
    return out


def config_json(config: pb.ContainerConfig, version: ApiVersion = LATEST_API_VERSION,
                mac_address: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "Hostname": config.hostname, "Domainname": config.domainname, "User": config.user,
        "AttachStdin": config.attach_stdin, "AttachStdout": config.attach_stdout,
        "AttachStderr": config.attach_stderr,
    }
    if config.exposed_ports:
        out["ExposedPorts"] = _set_map(config.exposed_ports)
    out.update({
        "Tty": config.tty, "OpenStdin": config.open_stdin, "StdinOnce": config.stdin_once,
        "Env": _or_null(config.env),
        "Cmd": list(config.cmd.values) if config.HasField("cmd") else None,
    })
    if config.HasField("healthcheck"):
        out["Healthcheck"] = healthcheck_json(config.healthcheck, version)
    if config.args_escaped:
        out["ArgsEscaped"] = True
    out.update({
        "Image": config.image, "Volumes": _set_map(config.volumes),
        "WorkingDir": config.working_dir,
        "Entrypoint": (list(config.entrypoint.values) or None
                       if config.HasField("entrypoint") else None),
    })
    if config.network_disabled:
        out["NetworkDisabled"] = True
    # API 1.44 moved the MAC address to the endpoint; older clients read it here.
    if version < (1, 44) and (config.mac_address or mac_address):
        out["MacAddress"] = config.mac_address or mac_address
    out.update({"OnBuild": _or_null(config.on_build), "Labels": dict(config.labels)})
    if config.stop_signal:
        out["StopSignal"] = config.stop_signal
    if config.HasField("stop_timeout"):
        out["StopTimeout"] = config.stop_timeout
    if config.shell:
        out["Shell"] = list(config.shell)
    return out


def _port_bindings_json(ports: Any, empty_is_null: bool) -> dict[str, Any]:
    return {port: ([{"HostIp": b.host_ip, "HostPort": b.host_port}
                    for b in bindings.bindings]
                   if bindings.bindings or not empty_is_null else None)
            for port, bindings in sorted(ports.items())}


def _mount_spec_json(mount: pb.Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": mount.type, "Source": mount.source,
                           "Target": mount.target}
    if mount.read_only:
        out["ReadOnly"] = True
    if mount.consistency:
        out["Consistency"] = mount.consistency
    if mount.HasField("bind_options"):
        bind = mount.bind_options
        out["BindOptions"] = {k: v for k, v in (
            ("Propagation", bind.propagation), ("NonRecursive", bind.non_recursive),
            ("CreateMountpoint", bind.create_mountpoint),
            ("ReadOnlyNonRecursive", bind.read_only_non_recursive),
            ("ReadOnlyForceRecursive", bind.read_only_force_recursive)) if v}
    if mount.HasField("volume_options"):
        volume = mount.volume_options
        options: dict[str, Any] = {}
        if volume.no_copy:
            options["NoCopy"] = True
        if volume.labels:
            options["Labels"] = dict(volume.labels)
        if volume.driver_config.name or volume.driver_config.options:
            options["DriverConfig"] = {"Name": volume.driver_config.name,
                                       "Options": dict(volume.driver_config.options)}
        if volume.subpath:
            options["Subpath"] = volume.subpath
        out["VolumeOptions"] = options
    if mount.HasField("tmpfs_options"):
        tmpfs = mount.tmpfs_options
        out["TmpfsOptions"] = {k: v for k, v in (
            ("SizeBytes", tmpfs.size_bytes), ("Mode", tmpfs.mode)) if v}
    return out


def _throttle_json(devices: Iterable[pb.ThrottleDevice]) -> list[dict[str, Any]]:
    return [{"Path": d.path, "Rate": d.rate} for d in devices]


def resources_json(res: pb.Resources) -> dict[str, Any]:
    out: dict[str, Any] = {
        "CpuShares": res.cpu_shares, "Memory": res.memory, "NanoCpus": res.nano_cpus,
        "CgroupParent": res.cgroup_parent, "BlkioWeight": res.blkio_weight,
        "BlkioWeightDevice": [{"Path": d.path, "Weight": d.weight}
                              for d in res.blkio_weight_device],
        "BlkioDeviceReadBps": _throttle_json(res.blkio_device_read_bps),
        "BlkioDeviceWriteBps": _throttle_json(res.blkio_device_write_bps),
        "BlkioDeviceReadIOps": _throttle_json(res.blkio_device_read_iops),
        "BlkioDeviceWriteIOps": _throttle_json(res.blkio_device_write_iops),
        "CpuPeriod": res.cpu_period, "CpuQuota": res.cpu_quota,
        "CpuRealtimePeriod": res.cpu_realtime_period,
        "CpuRealtimeRuntime": res.cpu_realtime_runtime,
        "CpusetCpus": res.cpuset_cpus, "CpusetMems": res.cpuset_mems,
        "Devices": [{"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                     "CgroupPermissions": d.cgroup_permissions} for d in res.devices],
        "DeviceCgroupRules": _or_null(res.device_cgroup_rules),
        "DeviceRequests": [_device_request_json(r) for r in res.device_requests] or None,
    }
    if res.kernel_memory_tcp:
        out["KernelMemoryTCP"] = res.kernel_memory_tcp
    out.update({
        "MemoryReservation": res.memory_reservation, "MemorySwap": res.memory_swap,
        "MemorySwappiness": _optional(res, "memory_swappiness"),
        "OomKillDisable": _optional(res, "oom_kill_disable"),
        # Zero and negative limits mean unlimited, which Docker shows as null.
        "PidsLimit": res.pids_limit if res.HasField("pids_limit") and res.pids_limit > 0
        else None,
        "Ulimits": [{"Name": u.name, "Hard": u.hard, "Soft": u.soft} for u in res.ulimits],
        "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    })
    return out


def _device_request_json(request: pb.DeviceRequest) -> dict[str, Any]:
    return {"Driver": request.driver, "Count": request.count,
            "DeviceIDs": _or_null(request.device_ids),
            "Capabilities": [list(c.capabilities) for c in request.capabilities] or None,
            "Options": dict(request.options) or None}


def host_config_json(host: pb.HostConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Binds": _or_null(host.binds), "ContainerIDFile": "",
        "LogConfig": {"Type": host.log_config.type or "json-file",
                      "Config": dict(host.log_config.config)},
        "NetworkMode": network_mode(host.network_mode),
        "PortBindings": _port_bindings_json(host.port_bindings, empty_is_null=False),
        "RestartPolicy": {"Name": host.restart_policy.name or "no",
                          "MaximumRetryCount": host.restart_policy.maximum_retry_count},
        "AutoRemove": host.auto_remove, "VolumeDriver": host.volume_driver,
        "VolumesFrom": _or_null(host.volumes_from),
        "ConsoleSize": list(host.console_size) or [0, 0],
        "CapAdd": _or_null(host.cap_add), "CapDrop": _or_null(host.cap_drop),
        "CgroupnsMode": host.cgroupns_mode or "host",
        "Dns": list(host.dns), "DnsOptions": list(host.dns_options),
        "DnsSearch": list(host.dns_search), "ExtraHosts": _or_null(host.extra_hosts),
        "GroupAdd": _or_null(host.group_add), "IpcMode": host.ipc_mode or "private",
        "Cgroup": host.cgroup, "Links": _or_null(host.links),
        "OomScoreAdj": host.oom_score_adj, "PidMode": host.pid_mode,
        "Privileged": host.privileged, "PublishAllPorts": host.publish_all_ports,
        "ReadonlyRootfs": host.readonly_rootfs, "SecurityOpt": _or_null(host.security_opt),
    }
    if host.storage_opt:
        out["StorageOpt"] = dict(host.storage_opt)
    if host.tmpfs:
        out["Tmpfs"] = dict(host.tmpfs)
    out.update({"UTSMode": host.uts_mode, "UsernsMode": host.userns_mode,
                "ShmSize": host.shm_size or DEFAULT_SHM_SIZE})
    if host.sysctls:
        out["Sysctls"] = dict(host.sysctls)
    out.update({"Runtime": host.runtime or "runc", "Isolation": host.isolation})
    if host.annotations:
        out["Annotations"] = dict(host.annotations)
    out.update(resources_json(host.resources))
    if host.mounts:
        out["Mounts"] = [_mount_spec_json(m) for m in host.mounts]
    defaults = not host.privileged
    out.update({
        "MaskedPaths": list(host.masked_paths) or (DEFAULT_MASKED_PATHS if defaults else None),
        "ReadonlyPaths": (list(host.readonly_paths)
                          or (DEFAULT_READONLY_PATHS if defaults else None)),
    })
    if host.HasField("init"):
        out["Init"] = host.init
    return out


def _endpoint_ipam_json(ipam: pb.EndpointIPAMConfig) -> dict[str, Any] | None:
    if not (ipam.ipv4_address or ipam.ipv6_address or ipam.link_local_ips):
        return None
    # Go's omitempty, as dockerd writes EndpointIPAMConfig.
    out: dict[str, Any] = {key: value for key, value in (
        ("IPv4Address", ipam.ipv4_address), ("IPv6Address", ipam.ipv6_address)) if value}
    if ipam.link_local_ips:
        out["LinkLocalIPs"] = list(ipam.link_local_ips)
    return out


def endpoint_json(endpoint: pb.EndpointSettings,
                  version: ApiVersion = LATEST_API_VERSION) -> dict[str, Any]:
    ipam = endpoint.ipam_config
    out: dict[str, Any] = {
        "IPAMConfig": _endpoint_ipam_json(ipam),
        "Links": _or_null(endpoint.links), "Aliases": _or_null(endpoint.aliases),
        "MacAddress": endpoint.mac_address,
        "DriverOpts": dict(endpoint.driver_opts) or None,
    }
    if version >= (1, 48):
        out["GwPriority"] = endpoint.gw_priority
    out.update({
        "NetworkID": endpoint.network_id, "EndpointID": endpoint.endpoint_id,
        "Gateway": endpoint.gateway, "IPAddress": endpoint.ip_address,
        "IPPrefixLen": endpoint.ip_prefix_len, "IPv6Gateway": endpoint.ipv6_gateway,
        "GlobalIPv6Address": endpoint.global_ipv6_address,
        "GlobalIPv6PrefixLen": endpoint.global_ipv6_prefix_len,
    })
    if version >= (1, 44):
        out["DNSNames"] = _or_null(endpoint.dns_names)
    return out


def network_settings_json(settings: pb.NetworkSettings,
                          version: ApiVersion = LATEST_API_VERSION) -> dict[str, Any]:
    bridge = settings.networks.get(BRIDGE, pb.EndpointSettings())
    return {
        "Bridge": "", "SandboxID": settings.sandbox_id, "SandboxKey": settings.sandbox_key,
        "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "Ports": _port_bindings_json(settings.ports, empty_is_null=True),
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        # The legacy top-level fields describe the default bridge endpoint.
        "EndpointID": bridge.endpoint_id, "Gateway": bridge.gateway,
        "GlobalIPv6Address": bridge.global_ipv6_address,
        "GlobalIPv6PrefixLen": bridge.global_ipv6_prefix_len,
        "IPAddress": bridge.ip_address, "IPPrefixLen": bridge.ip_prefix_len,
        "IPv6Gateway": bridge.ipv6_gateway, "MacAddress": bridge.mac_address,
        "Networks": {name: endpoint_json(ep, version)
                     for name, ep in sorted(settings.networks.items())},
    }


def mount_point_json(mount: pb.MountPoint) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": mount.type}
    if mount.name:
        out["Name"] = mount.name
    out.update({"Source": mount.source, "Destination": mount.destination})
    if mount.driver:
        out["Driver"] = mount.driver
    out.update({"Mode": mount.mode, "RW": mount.rw, "Propagation": mount.propagation})
    return out


def state_json(state: pb.ContainerState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Status": state.status, "Running": state.running, "Paused": state.paused,
        "Restarting": state.restarting, "OOMKilled": state.oom_killed, "Dead": state.dead,
        "Pid": state.pid, "ExitCode": state.exit_code, "Error": state.error,
        "StartedAt": state.started_at or "0001-01-01T00:00:00Z",
        "FinishedAt": state.finished_at or "0001-01-01T00:00:00Z",
    }
    if state.HasField("health"):
        out["Health"] = {
            "Status": state.health.status, "FailingStreak": state.health.failing_streak,
            "Log": [{"Start": log.start, "End": log.end, "ExitCode": log.exit_code,
                     "Output": log.output} for log in state.health.log]}
    return out


def inspect_json(container: pb.ContainerInspect,
                 version: ApiVersion = LATEST_API_VERSION) -> dict[str, Any]:
    bridge = container.network_settings.networks.get(BRIDGE, pb.EndpointSettings())
    out: dict[str, Any] = {
        "Id": container.id, "Created": container.created, "Path": container.path,
        "Args": list(container.args), "State": state_json(container.state),
        "Image": container.image, "ResolvConfPath": container.resolv_conf_path,
        "HostnamePath": container.hostname_path, "HostsPath": container.hosts_path,
        "LogPath": container.log_path, "Name": container.name,
        "RestartCount": container.restart_count, "Driver": container.driver or "overlay2",
        "Platform": container.platform or "linux", "MountLabel": container.mount_label,
        "ProcessLabel": container.process_label,
        "AppArmorProfile": container.app_armor_profile,
        "ExecIDs": _or_null(container.exec_ids),
        "HostConfig": host_config_json(container.host_config),
        "GraphDriver": {"Data": dict(container.graph_driver_data) or None,
                        "Name": container.driver or "overlay2"},
    }
    if container.HasField("size_rw"):
        out["SizeRw"] = container.size_rw
    if container.HasField("size_root_fs"):
        out["SizeRootFs"] = container.size_root_fs
    out.update({
        "Mounts": [mount_point_json(m) for m in container.mounts],
        "Config": config_json(container.config, version, bridge.mac_address),
        "NetworkSettings": network_settings_json(container.network_settings, version),
    })
    if version < (1, 45):
        _add_legacy_aliases(out, container.id[:12], container.config.hostname)
    return out


def _add_legacy_aliases(out: dict[str, Any], short_id: str, hostname: str) -> None:
    """Before API 1.45 dockerd lists the short ID and hostname among the aliases
    on user-defined networks (Compose 1.29 reads them to skip reconnecting)."""
    for name, endpoint in out["NetworkSettings"]["Networks"].items():
        if name in BUILTIN_NETWORK_MODES or name.startswith("container:"):
            continue
        aliases = [*(endpoint["Aliases"] or []), short_id, hostname]
        endpoint["Aliases"] = list(dict.fromkeys(a for a in aliases if a))


def summary_json(summary: pb.ContainerSummary, version: ApiVersion = LATEST_API_VERSION,
                 size: bool = False) -> dict[str, Any]:
    ports = []
    for port in summary.ports:
        entry: dict[str, Any] = {}
        if port.ip:
            entry["IP"] = port.ip
        entry["PrivatePort"] = port.private_port
        if port.public_port:
            entry["PublicPort"] = port.public_port
        entry["Type"] = port.type
        ports.append(entry)
    out: dict[str, Any] = {
        "Id": summary.id, "Names": list(summary.names), "Image": summary.image,
        "ImageID": summary.image_id, "Command": summary.command, "Created": summary.created,
        "Ports": ports,
    }
    if size:
        out["SizeRw"] = summary.size_rw
        out["SizeRootFs"] = summary.size_root_fs
    out.update({
        "Labels": dict(summary.labels), "State": summary.state, "Status": summary.status,
        "HostConfig": {"NetworkMode": network_mode(summary.network_mode)},
        "NetworkSettings": {"Networks": {name: endpoint_json(ep, version)
                                         for name, ep in sorted(summary.networks.items())}},
        "Mounts": [mount_point_json(m) for m in summary.mounts],
    })
    return out


def wait_body(status_code: int, error: str) -> dict[str, Any]:
    return {"StatusCode": status_code, "Error": {"Message": error} if error else None}
