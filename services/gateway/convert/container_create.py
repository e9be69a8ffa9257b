"""The body of POST /containers/create (Config + HostConfig + NetworkingConfig)
as a typed CreateContainerRequest. Fields are read with Docker's Go types
(params.Fields), so a value of the wrong type is Docker's 400."""

from __future__ import annotations

from berth.container.v1 import container_pb2 as pb
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.common.netns import NETNS_PATH_MODE
from services.gateway.errors import HTTPError, bad_request
from services.gateway.params import LATEST_API_VERSION, ApiVersion, Fields

RESTART_POLICIES = ("", "no", "always", "unless-stopped", "on-failure")
CREATE_REQUEST = "container.CreateRequest"
# Before it, read-only binds were read-only only at their own mount point.
RECURSIVE_READ_ONLY_SINCE = (1, 44)


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def _string_list(values: list[str] | None) -> types_pb2.StringList:
    return types_pb2.StringList(values=values or [])


def healthcheck(body: Fields) -> image_pb2.HealthConfig | None:
    if not body:
        return None
    health = image_pb2.HealthConfig(
        interval_ns=body.integer("Interval"), timeout_ns=body.integer("Timeout"),
        start_period_ns=body.integer("StartPeriod"),
        start_interval_ns=body.integer("StartInterval"),
        retries=body.integer("Retries", "int32"))
    if body.has("Test"):
        health.test.CopyFrom(_string_list(body.strings("Test")))
    return health


def container_config(body: Fields) -> pb.ContainerConfig:
    """Docker's Config (the top level of the create body, or a commit's config)."""
    config = pb.ContainerConfig(
        hostname=body.string("Hostname"),
        domainname=body.string("Domainname"),
        user=body.string("User"),
        attach_stdin=body.boolean("AttachStdin"),
        attach_stdout=body.boolean("AttachStdout"),
        attach_stderr=body.boolean("AttachStderr"),
        exposed_ports=[_port_key(port) for port in body.keys("ExposedPorts")],
        tty=body.boolean("Tty"),
        open_stdin=body.boolean("OpenStdin"),
        stdin_once=body.boolean("StdinOnce"),
        env=body.strings("Env"),
        image=body.string("Image"),
        volumes=body.keys("Volumes"),
        working_dir=body.string("WorkingDir"),
        network_disabled=body.boolean("NetworkDisabled"),
        mac_address=body.string("MacAddress"),
        on_build=body.strings("OnBuild"),
        labels=body.string_map("Labels"),
        stop_signal=body.string("StopSignal"),
        shell=body.str_slice("Shell") or [],
        args_escaped=body.boolean("ArgsEscaped"),
    )
    cmd = body.str_slice("Cmd")
    if cmd:
        config.cmd.CopyFrom(_string_list(cmd))
    entrypoint = body.str_slice("Entrypoint")
    if entrypoint is not None:
        # `--entrypoint ""` arrives as [""]: no entrypoint at all.
        config.entrypoint.CopyFrom(_string_list([] if entrypoint == [""] else entrypoint))
    if body.has("StopTimeout"):
        config.stop_timeout = body.integer("StopTimeout", "int32")
    health = healthcheck(body.object("Healthcheck", "container.HealthConfig"))
    if health is not None:
        config.healthcheck.CopyFrom(health)
    return config


def _mount(body: Fields) -> pb.Mount:
    mount = pb.Mount(type=body.string("Type"), source=body.string("Source"),
                     target=body.string("Target"), read_only=body.boolean("ReadOnly"),
                     consistency=body.string("Consistency"))
    if bind := body.object("BindOptions", "mount.BindOptions"):
        mount.bind_options.CopyFrom(pb.BindOptions(
            propagation=bind.string("Propagation"),
            non_recursive=bind.boolean("NonRecursive"),
            create_mountpoint=bind.boolean("CreateMountpoint"),
            read_only_non_recursive=bind.boolean("ReadOnlyNonRecursive"),
            read_only_force_recursive=bind.boolean("ReadOnlyForceRecursive")))
    if volume := body.object("VolumeOptions", "mount.VolumeOptions"):
        driver = volume.object("DriverConfig", "mount.Driver")
        mount.volume_options.CopyFrom(pb.VolumeOptions(
            no_copy=volume.boolean("NoCopy"), labels=volume.string_map("Labels"),
            driver_config=pb.DriverConfig(name=driver.string("Name"),
                                          options=driver.string_map("Options")),
            subpath=volume.string("Subpath")))
    if tmpfs := body.object("TmpfsOptions", "mount.TmpfsOptions"):
        mount.tmpfs_options.CopyFrom(pb.TmpfsOptions(
            size_bytes=tmpfs.integer("SizeBytes"), mode=tmpfs.integer("Mode", "os.FileMode")))
    return mount


def _device_request(body: Fields) -> pb.DeviceRequest:
    return pb.DeviceRequest(
        driver=body.string("Driver"), count=body.integer("Count", "int32"),
        device_ids=body.strings("DeviceIDs"),
        capabilities=[pb.DeviceCapabilities(capabilities=c)
                      for c in body.string_lists("Capabilities")],
        options=body.string_map("Options"))


def _throttle_devices(body: Fields, key: str) -> list[pb.ThrottleDevice]:
    return [pb.ThrottleDevice(path=d.string("Path"), rate=d.integer("Rate", "uint64"))
            for d in body.objects(key, "blkiodev.ThrottleDevice")]


def resources(body: Fields) -> pb.Resources:
    """Docker's Resources, which HostConfig and /update carry flattened."""
    res = pb.Resources(
        cpu_shares=body.integer("CpuShares"),
        memory=body.integer("Memory"),
        nano_cpus=body.integer("NanoCpus"),
        cgroup_parent=body.string("CgroupParent"),
        blkio_weight=body.integer("BlkioWeight", "uint16"),
        cpu_period=body.integer("CpuPeriod"),
        cpu_quota=body.integer("CpuQuota"),
        cpu_realtime_period=body.integer("CpuRealtimePeriod"),
        cpu_realtime_runtime=body.integer("CpuRealtimeRuntime"),
        cpuset_cpus=body.string("CpusetCpus"),
        cpuset_mems=body.string("CpusetMems"),
        devices=[pb.DeviceMapping(path_on_host=d.string("PathOnHost"),
                                  path_in_container=d.string("PathInContainer"),
                                  cgroup_permissions=d.string("CgroupPermissions"))
                 for d in body.objects("Devices", "container.DeviceMapping")],
        memory_reservation=body.integer("MemoryReservation"),
        memory_swap=body.integer("MemorySwap"),
        ulimits=[pb.Ulimit(name=u.string("Name"), soft=u.integer("Soft"), hard=u.integer("Hard"))
                 for u in body.objects("Ulimits", "container.Ulimit")],
        kernel_memory_tcp=body.integer("KernelMemoryTCP"),
        device_requests=[_device_request(r)
                         for r in body.objects("DeviceRequests", "container.DeviceRequest")],
        device_cgroup_rules=body.strings("DeviceCgroupRules"),
        blkio_weight_device=[
            pb.WeightDevice(path=d.string("Path"), weight=d.integer("Weight", "uint16"))
            for d in body.objects("BlkioWeightDevice", "blkiodev.WeightDevice")],
        blkio_device_read_bps=_throttle_devices(body, "BlkioDeviceReadBps"),
        blkio_device_write_bps=_throttle_devices(body, "BlkioDeviceWriteBps"),
        blkio_device_read_iops=_throttle_devices(body, "BlkioDeviceReadIOps"),
        blkio_device_write_iops=_throttle_devices(body, "BlkioDeviceWriteIOps"),
    )
    # -1 is how old clients said "unset".
    swappiness = body.integer("MemorySwappiness")
    if body.has("MemorySwappiness") and swappiness != -1:
        res.memory_swappiness = swappiness
    if body.has("OomKillDisable"):
        res.oom_kill_disable = body.boolean("OomKillDisable")
    if body.has("PidsLimit"):
        res.pids_limit = body.integer("PidsLimit")
    return res


def restart_policy(body: Fields) -> pb.RestartPolicy:
    """Docker's RestartPolicy object as the proto, with Docker's messages for
    an unknown policy or a bad retry count (create and update share it)."""
    name = body.string("Name")
    retries = body.integer("MaximumRetryCount", "int32")
    if name not in RESTART_POLICIES:
        raise bad_request(f"invalid restart policy: unknown policy '{name}'; use one of "
                          "'no', 'always', 'on-failure', or 'unless-stopped'")
    if retries < 0:
        raise bad_request("invalid restart policy: maximum retry count cannot be negative")
    if retries and name != "on-failure":
        raise bad_request("invalid restart policy: maximum retry count can only be used "
                          "with 'on-failure'")
    return pb.RestartPolicy(name=name, maximum_retry_count=retries)


# The CRI's driver (a log at the kubelet's path): not one of Docker's.
BERTH_ONLY_LOG_DRIVERS = frozenset({"k8s-file"})


def network_mode(value: str) -> str:
    """Docker's "default" (and empty) network mode is the bridge network."""
    return "bridge" if value in ("", "default") else value


def client_network_mode(mode: str) -> str:
    """A Docker client names a network, never a netns file on the host."""
    if mode.startswith(NETNS_PATH_MODE):
        raise HTTPError(404, f"network {mode} not found")
    return mode


def _port_bindings(body: Fields) -> dict[str, pb.PortBindings]:
    return {_port_key(port): pb.PortBindings(bindings=[
                pb.PortBinding(host_ip=b.string("HostIp"), host_port=b.string("HostPort"))
                for b in bindings])
            for port, bindings in body.object_lists("PortBindings", "nat.PortBinding").items()}


def _log_config(body: Fields) -> pb.LogConfig:
    log_config = body.object("LogConfig", "container.LogConfig")
    driver = log_config.string("Type")
    if driver in BERTH_ONLY_LOG_DRIVERS:
        raise bad_request(f"logger: no log driver named '{driver}' is registered")
    return pb.LogConfig(type=driver, config=log_config.string_map("Config"))


def host_config(body: Fields) -> pb.HostConfig:
    host = pb.HostConfig(
        binds=body.strings("Binds"),
        log_config=_log_config(body),
        network_mode=client_network_mode(network_mode(body.string("NetworkMode"))),
        port_bindings=_port_bindings(body),
        restart_policy=restart_policy(body.object("RestartPolicy", "container.RestartPolicy")),
        auto_remove=body.boolean("AutoRemove"),
        volume_driver=body.string("VolumeDriver"),
        volumes_from=body.strings("VolumesFrom"),
        mounts=[_mount(m) for m in body.objects("Mounts", "mount.Mount")],
        cap_add=body.str_slice("CapAdd") or [],
        cap_drop=body.str_slice("CapDrop") or [],
        cgroupns_mode=body.string("CgroupnsMode"),
        dns=body.strings("Dns"),
        dns_options=body.strings("DnsOptions"),
        dns_search=body.strings("DnsSearch"),
        extra_hosts=body.strings("ExtraHosts"),
        group_add=body.strings("GroupAdd"),
        ipc_mode=body.string("IpcMode"),
        cgroup=body.string("Cgroup"),
        links=body.strings("Links"),
        oom_score_adj=body.integer("OomScoreAdj", "int32"),
        pid_mode=body.string("PidMode"),
        privileged=body.boolean("Privileged"),
        publish_all_ports=body.boolean("PublishAllPorts"),
        readonly_rootfs=body.boolean("ReadonlyRootfs"),
        security_opt=body.strings("SecurityOpt"),
        storage_opt=body.string_map("StorageOpt"),
        tmpfs=body.string_map("Tmpfs"),
        uts_mode=body.string("UTSMode"),
        userns_mode=body.string("UsernsMode"),
        shm_size=body.integer("ShmSize"),
        sysctls=body.string_map("Sysctls"),
        runtime=body.string("Runtime"),
        resources=resources(body),
        masked_paths=body.strings("MaskedPaths"),
        readonly_paths=body.strings("ReadonlyPaths"),
        console_size=body.integers("ConsoleSize", "uint32"),
        isolation=body.string("Isolation"),
        annotations=body.string_map("Annotations"),
    )
    if body.has("Init"):
        host.init = body.boolean("Init")
    return host


def endpoint_settings(body: Fields) -> pb.EndpointSettings:
    ipam = body.object("IPAMConfig", "network.EndpointIPAMConfig")
    return pb.EndpointSettings(
        ipam_config=pb.EndpointIPAMConfig(ipv4_address=ipam.string("IPv4Address"),
                                          ipv6_address=ipam.string("IPv6Address"),
                                          link_local_ips=ipam.strings("LinkLocalIPs")),
        gw_priority=body.integer("GwPriority", "int32"),
        links=body.strings("Links"),
        aliases=body.strings("Aliases"),
        mac_address=body.string("MacAddress"),
        driver_opts=body.string_map("DriverOpts"),
        network_id=body.string("NetworkID"))


def create_request(name: str, platform: str, body: Fields,
                   version: ApiVersion = LATEST_API_VERSION) -> pb.CreateContainerRequest:
    networking = body.object("NetworkingConfig", "network.NetworkingConfig")
    endpoints = networking.object_map("EndpointsConfig", "network.EndpointSettings")
    host = host_config(body.object("HostConfig", "container.HostConfig"))
    older_client = version < RECURSIVE_READ_ONLY_SINCE
    if older_client and any(m.bind_options.read_only_force_recursive for m in host.mounts):
        # dockerd refuses rather than ignores it: the client counts on it.
        raise bad_request("BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer")
    return pb.CreateContainerRequest(
        name=name, platform=platform,
        config=container_config(body),
        host_config=host, read_only_binds_non_recursive=older_client,
        networking_config=pb.NetworkingConfig(endpoints_config={
            # The CLI keys the endpoint of `--network default` (the default) "default" too.
            network_mode(net): endpoint_settings(settings)
            for net, settings in endpoints.items()}))
