"""The body of POST /containers/create (Config + HostConfig + NetworkingConfig)
as a typed CreateContainerRequest."""

from __future__ import annotations

from typing import Any

from berth.container.v1 import container_pb2 as pb
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.gateway.errors import bad_request

RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")


def _strings(value: Any) -> list[str]:
    """Docker's StrSlice: null, a string, or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _string_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def _int(value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"json: cannot unmarshal {type(value).__name__} into Go struct "
                          f"field {field} of type int64")
    return int(value)


def healthcheck(body: dict[str, Any] | None) -> image_pb2.HealthConfig | None:
    if not body:
        return None
    health = image_pb2.HealthConfig(
        interval_ns=_int(body.get("Interval"), "Interval"),
        timeout_ns=_int(body.get("Timeout"), "Timeout"),
        start_period_ns=_int(body.get("StartPeriod"), "StartPeriod"),
        start_interval_ns=_int(body.get("StartInterval"), "StartInterval"),
        retries=_int(body.get("Retries"), "Retries"))
    if body.get("Test") is not None:
        health.test.CopyFrom(types_pb2.StringList(values=_strings(body["Test"])))
    return health


def container_config(body: dict[str, Any]) -> pb.ContainerConfig:
    """Docker's Config (the top level of the create body, or a commit's config)."""
    config = pb.ContainerConfig(
        hostname=body.get("Hostname") or "",
        domainname=body.get("Domainname") or "",
        user=body.get("User") or "",
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")),
        exposed_ports=[_port_key(port) for port in (body.get("ExposedPorts") or {})],
        tty=bool(body.get("Tty")),
        open_stdin=bool(body.get("OpenStdin")),
        stdin_once=bool(body.get("StdinOnce")),
        env=_strings(body.get("Env")),
        image=body.get("Image") or "",
        volumes=list(body.get("Volumes") or {}),
        working_dir=body.get("WorkingDir") or "",
        network_disabled=bool(body.get("NetworkDisabled")),
        mac_address=body.get("MacAddress") or "",
        on_build=_strings(body.get("OnBuild")),
        labels=_string_map(body.get("Labels")),
        stop_signal=body.get("StopSignal") or "",
        shell=_strings(body.get("Shell")),
        args_escaped=bool(body.get("ArgsEscaped")),
    )
    cmd = _strings(body.get("Cmd"))
    if cmd:
        config.cmd.CopyFrom(types_pb2.StringList(values=cmd))
    if body.get("Entrypoint") is not None:
        # `--entrypoint ""` arrives as [""]: no entrypoint at all.
        entrypoint = _strings(body["Entrypoint"])
        config.entrypoint.CopyFrom(
            types_pb2.StringList(values=[] if entrypoint == [""] else entrypoint))
    if body.get("StopTimeout") is not None:
        config.stop_timeout = _int(body["StopTimeout"], "StopTimeout")
    health = healthcheck(body.get("Healthcheck"))
    if health is not None:
        config.healthcheck.CopyFrom(health)
    return config


def _mount(body: dict[str, Any]) -> pb.Mount:
    mount = pb.Mount(type=body.get("Type") or "", source=body.get("Source") or "",
                     target=body.get("Target") or "", read_only=bool(body.get("ReadOnly")),
                     consistency=body.get("Consistency") or "")
    if bind := body.get("BindOptions"):
        mount.bind_options.CopyFrom(pb.BindOptions(
            propagation=bind.get("Propagation") or "",
            non_recursive=bool(bind.get("NonRecursive")),
            create_mountpoint=bool(bind.get("CreateMountpoint"))))
    if volume := body.get("VolumeOptions"):
        driver = volume.get("DriverConfig") or {}
        mount.volume_options.CopyFrom(pb.VolumeOptions(
            no_copy=bool(volume.get("NoCopy")), labels=_string_map(volume.get("Labels")),
            driver_config=pb.DriverConfig(name=driver.get("Name") or "",
                                          options=_string_map(driver.get("Options"))),
            subpath=volume.get("Subpath") or ""))
    if tmpfs := body.get("TmpfsOptions"):
        mount.tmpfs_options.CopyFrom(pb.TmpfsOptions(
            size_bytes=_int(tmpfs.get("SizeBytes"), "SizeBytes"),
            mode=_int(tmpfs.get("Mode"), "Mode")))
    return mount


def resources(body: dict[str, Any]) -> pb.Resources:
    """Docker's Resources, which HostConfig and /update carry flattened."""
    res = pb.Resources(
        cpu_shares=_int(body.get("CpuShares"), "CpuShares"),
        memory=_int(body.get("Memory"), "Memory"),
        nano_cpus=_int(body.get("NanoCpus"), "NanoCpus"),
        cgroup_parent=body.get("CgroupParent") or "",
        blkio_weight=_int(body.get("BlkioWeight"), "BlkioWeight"),
        cpu_period=_int(body.get("CpuPeriod"), "CpuPeriod"),
        cpu_quota=_int(body.get("CpuQuota"), "CpuQuota"),
        cpu_realtime_period=_int(body.get("CpuRealtimePeriod"), "CpuRealtimePeriod"),
        cpu_realtime_runtime=_int(body.get("CpuRealtimeRuntime"), "CpuRealtimeRuntime"),
        cpuset_cpus=body.get("CpusetCpus") or "",
        cpuset_mems=body.get("CpusetMems") or "",
        devices=[pb.DeviceMapping(path_on_host=d.get("PathOnHost") or "",
                                  path_in_container=d.get("PathInContainer") or "",
                                  cgroup_permissions=d.get("CgroupPermissions") or "")
                 for d in body.get("Devices") or []],
        memory_reservation=_int(body.get("MemoryReservation"), "MemoryReservation"),
        memory_swap=_int(body.get("MemorySwap"), "MemorySwap"),
        ulimits=[pb.Ulimit(name=u.get("Name") or "", soft=_int(u.get("Soft"), "Soft"),
                           hard=_int(u.get("Hard"), "Hard"))
                 for u in body.get("Ulimits") or []],
        kernel_memory_tcp=_int(body.get("KernelMemoryTCP"), "KernelMemoryTCP"),
    )
    # -1 is how old clients said "unset".
    if body.get("MemorySwappiness") is not None and body["MemorySwappiness"] != -1:
        res.memory_swappiness = _int(body["MemorySwappiness"], "MemorySwappiness")
    if body.get("OomKillDisable") is not None:
        res.oom_kill_disable = bool(body["OomKillDisable"])
    if body.get("PidsLimit") is not None:
        res.pids_limit = _int(body["PidsLimit"], "PidsLimit")
    return res


def restart_policy(body: dict[str, Any] | None) -> pb.RestartPolicy:
    """Docker's RestartPolicy object as the proto, with Docker's messages for
    an unknown policy or a bad retry count (create and update share it)."""
    body = body or {}
    name = body.get("Name") or ""
    retries = _int(body.get("MaximumRetryCount"), "MaximumRetryCount")
    if name not in RESTART_POLICIES:
        raise bad_request(f"invalid restart policy: unknown policy '{name}'; use one of "
                          "'no', 'always', 'on-failure', or 'unless-stopped'")
    if retries < 0:
        raise bad_request("invalid restart policy: maximum retry count cannot be negative")
    if retries and name != "on-failure":
        raise bad_request("invalid restart policy: maximum retry count can only be used "
                          "with 'on-failure'")
    return pb.RestartPolicy(name=name, maximum_retry_count=retries)


def network_mode(value: str | None) -> str:
    """Docker's "default" (and empty) network mode is the bridge network."""
    return "bridge" if value in (None, "", "default") else value


def host_config(body: dict[str, Any]) -> pb.HostConfig:
    log_config = body.get("LogConfig") or {}
    host = pb.HostConfig(
        binds=_strings(body.get("Binds")),
        log_config=pb.LogConfig(type=log_config.get("Type") or "",
                                config=_string_map(log_config.get("Config"))),
        network_mode=network_mode(body.get("NetworkMode")),
        port_bindings={
            _port_key(port): pb.PortBindings(bindings=[
                pb.PortBinding(host_ip=(b or {}).get("HostIp") or "",
                               host_port=str((b or {}).get("HostPort") or ""))
                for b in bindings or []])
            for port, bindings in (body.get("PortBindings") or {}).items()},
        restart_policy=restart_policy(body.get("RestartPolicy")),
        auto_remove=bool(body.get("AutoRemove")),
        volume_driver=body.get("VolumeDriver") or "",
        volumes_from=_strings(body.get("VolumesFrom")),
        mounts=[_mount(m) for m in body.get("Mounts") or []],
        cap_add=_strings(body.get("CapAdd")),
        cap_drop=_strings(body.get("CapDrop")),
        cgroupns_mode=body.get("CgroupnsMode") or "",
        dns=_strings(body.get("Dns")),
        dns_options=_strings(body.get("DnsOptions")),
        dns_search=_strings(body.get("DnsSearch")),
        extra_hosts=_strings(body.get("ExtraHosts")),
        group_add=_strings(body.get("GroupAdd")),
        ipc_mode=body.get("IpcMode") or "",
        cgroup=body.get("Cgroup") or "",
        links=_strings(body.get("Links")),
        oom_score_adj=_int(body.get("OomScoreAdj"), "OomScoreAdj"),
        pid_mode=body.get("PidMode") or "",
        privileged=bool(body.get("Privileged")),
        publish_all_ports=bool(body.get("PublishAllPorts")),
        readonly_rootfs=bool(body.get("ReadonlyRootfs")),
        security_opt=_strings(body.get("SecurityOpt")),
        storage_opt=_string_map(body.get("StorageOpt")),
        tmpfs=_string_map(body.get("Tmpfs")),
        uts_mode=body.get("UTSMode") or "",
        userns_mode=body.get("UsernsMode") or "",
        shm_size=_int(body.get("ShmSize"), "ShmSize"),
        sysctls=_string_map(body.get("Sysctls")),
        runtime=body.get("Runtime") or "",
        resources=resources(body),
        masked_paths=_strings(body.get("MaskedPaths")),
        readonly_paths=_strings(body.get("ReadonlyPaths")),
        console_size=[_int(v, "ConsoleSize") for v in body.get("ConsoleSize") or []],
    )
    if body.get("Init") is not None:
        host.init = bool(body["Init"])
    return host


def endpoint_settings(body: dict[str, Any] | None) -> pb.EndpointSettings:
    body = body or {}
    ipam = body.get("IPAMConfig") or {}
    return pb.EndpointSettings(
        ipam_config=pb.EndpointIPAMConfig(ipv4_address=ipam.get("IPv4Address") or "",
                                          ipv6_address=ipam.get("IPv6Address") or ""),
        links=_strings(body.get("Links")),
        aliases=_strings(body.get("Aliases")),
        mac_address=body.get("MacAddress") or "",
        driver_opts=_string_map(body.get("DriverOpts")),
        network_id=body.get("NetworkID") or "")


def create_request(name: str, platform: str, body: dict[str, Any]) -> pb.CreateContainerRequest:
    if not isinstance(body, dict):
        raise bad_request("invalid JSON: expected an object")
    networking = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    return pb.CreateContainerRequest(
        name=name, platform=platform,
        config=container_config(body),
        host_config=host_config(body.get("HostConfig") or {}),
        networking_config=pb.NetworkingConfig(endpoints_config={
            # The CLI keys the endpoint of `--network default` (the default) "default" too.
            network_mode(net): endpoint_settings(settings)
            for net, settings in networking.items()}))
