"""Docker's container JSON <-> the container service's protos."""

from __future__ import annotations

import pytest

from berth.container.v1 import container_pb2 as pb
from services.gateway.containers import log_timestamp
from services.gateway.convert.container_create import create_request
from services.gateway.convert.container_view import (
    config_json,
    host_config_json,
    inspect_json,
    summary_json,
    wait_body,
)
from services.gateway.errors import HTTPError
from services.gateway.params import Fields, parse_api_version

# What `docker create` (CLI 28) sends for:
#   docker create --name web -p 8080:80 -e A=1 --restart on-failure:3 --init
#     --ulimit nofile=100:200 --tmpfs /run:size=1m --cap-add NET_ADMIN -m 64m
#     --health-cmd true --mount type=volume,src=data,dst=/data busybox sh -c true
CLI_BODY = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False,
    "AttachStdout": True, "AttachStderr": True, "ExposedPorts": {"80/tcp": {}},
    "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": ["A=1"],
    "Cmd": ["sh", "-c", "true"],
    "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 0},
    "Image": "busybox", "Volumes": {}, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": {"l": "v"},
    "HostConfig": {
        "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "", "Config": {}},
        "NetworkMode": "default", "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [30, 120],
        "CapAdd": ["NET_ADMIN"], "CapDrop": None, "CgroupnsMode": "", "Dns": [],
        "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None,
        "IpcMode": "", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
        "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
        "SecurityOpt": None, "Tmpfs": {"/run": "size=1m"}, "UTSMode": "", "UsernsMode": "",
        "ShmSize": 0, "Isolation": "", "CpuShares": 0, "Memory": 67108864, "NanoCpus": 0,
        "CgroupParent": "", "BlkioWeight": 0, "BlkioWeightDevice": [],
        "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
        "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
        "OomKillDisable": None, "PidsLimit": None,
        "Ulimits": [{"Name": "nofile", "Hard": 200, "Soft": 100}],
        "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data"}],
        "MaskedPaths": None, "ReadonlyPaths": None, "Init": True,
    },
    "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": ["w"]}}},
}


def body(data: dict) -> Fields:
    return Fields.of(data, "container.CreateRequest")


def test_cli_body_becomes_typed_request() -> None:
    request = create_request("web", "", body(CLI_BODY))
    config, host = request.config, request.host_config
    assert request.name == "web"
    assert list(config.cmd.values) == ["sh", "-c", "true"]
    assert not config.HasField("entrypoint")
    assert list(config.exposed_ports) == ["80/tcp"]
    assert list(config.healthcheck.test.values) == ["CMD-SHELL", "true"]
    assert dict(config.labels) == {"l": "v"}
    assert host.network_mode == "bridge"
    assert host.port_bindings["80/tcp"].bindings[0].host_port == "8080"
    assert host.restart_policy.name == "on-failure"
    assert host.restart_policy.maximum_retry_count == 3
    assert host.init is True
    assert host.resources.memory == 64 * 1024 * 1024
    assert not host.resources.HasField("pids_limit")
    assert host.resources.ulimits[0] == pb.Ulimit(name="nofile", soft=100, hard=200)
    assert dict(host.tmpfs) == {"/run": "size=1m"}
    assert host.mounts[0].type == "volume" and host.mounts[0].target == "/data"
    assert list(host.cap_add) == ["NET_ADMIN"]
    assert list(host.console_size) == [30, 120]
    assert list(request.networking_config.endpoints_config["bridge"].aliases) == ["w"]


def test_cmd_and_entrypoint_presence() -> None:
    config = create_request("", "", body({"Image": "x", "Cmd": "echo hi",
                                          "Entrypoint": [""]})).config
    assert list(config.cmd.values) == ["echo hi"]
    assert config.HasField("entrypoint") and not config.entrypoint.values
    config = create_request("", "", body({"Image": "x", "Cmd": None})).config
    assert not config.HasField("cmd") and not config.HasField("entrypoint")


@pytest.mark.parametrize("policy, message", [
    ({"Name": "sometimes"}, "invalid restart policy: unknown policy 'sometimes'"),
    ({"Name": "always", "MaximumRetryCount": 2}, "maximum retry count can only be used"),
])
def test_restart_policy_errors(policy: dict, message: str) -> None:
    with pytest.raises(HTTPError) as caught:
        create_request("", "", body({"Image": "x", "HostConfig": {"RestartPolicy": policy}}))
    assert caught.value.status == 400 and message in caught.value.message


def test_wrong_json_type_is_a_bad_request() -> None:
    with pytest.raises(HTTPError) as caught:
        create_request("", "", body({"Image": "x", "HostConfig": {"Memory": "lots"}}))
    assert caught.value.status == 400


def test_round_trip_through_inspect_keeps_docker_keys() -> None:
    request = create_request("web", "", body(CLI_BODY))
    host = host_config_json(request.host_config)
    assert host["NetworkMode"] == "bridge"
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {}}
    assert host["Binds"] is None and host["PidsLimit"] is None
    assert "/proc/kcore" in host["MaskedPaths"] and "/proc/sys" in host["ReadonlyPaths"]
    assert host["Memory"] == 67108864 and host["ShmSize"] == 64 * 1024 * 1024
    assert host["Init"] is True and host["Tmpfs"] == {"/run": "size=1m"}
    assert host["Ulimits"] == [{"Name": "nofile", "Hard": 200, "Soft": 100}]
    assert host["Mounts"] == [{"Type": "volume", "Source": "data", "Target": "/data"}]
    config = config_json(request.config)
    assert config["ExposedPorts"] == {"80/tcp": {}}
    assert config["Cmd"] == ["sh", "-c", "true"] and config["Entrypoint"] is None
    assert config["Volumes"] is None and config["OnBuild"] is None
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"]}
    assert "StopTimeout" not in config and "MacAddress" not in config


def test_inspect_shape() -> None:
    container = pb.ContainerInspect(
        id="a" * 64, created="2026-01-01T00:00:00.000000001Z", path="sh", args=["-c", "x"],
        name="/web", state=pb.ContainerState(status="running", running=True, pid=42),
        network_settings=pb.NetworkSettings(
            ports={"80/tcp": pb.PortBindings(), "81/tcp": pb.PortBindings(
                bindings=[pb.PortBinding(host_ip="0.0.0.0", host_port="8081")])},
            networks={"bridge": pb.EndpointSettings(ip_address="172.17.0.2", ip_prefix_len=16,
                                                    gateway="172.17.0.1",
                                                    mac_address="02:42:ac:11:00:02")}))
    out = inspect_json(container)
    assert out["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"
    assert out["State"]["Pid"] == 42 and "Health" not in out["State"]
    assert out["ExecIDs"] is None and "SizeRw" not in out
    assert out["GraphDriver"] == {"Data": None, "Name": "overlay2"}
    settings = out["NetworkSettings"]
    assert settings["Ports"] == {"80/tcp": None,
                                 "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}]}
    assert settings["IPAddress"] == "172.17.0.2" and settings["IPPrefixLen"] == 16
    assert settings["Networks"]["bridge"]["IPAMConfig"] is None
    assert settings["Networks"]["bridge"]["DNSNames"] is None
    assert "MacAddress" not in out["Config"]
    old = inspect_json(container, parse_api_version("1.41"))
    assert old["Config"]["MacAddress"] == "02:42:ac:11:00:02"
    assert "DNSNames" not in old["NetworkSettings"]["Networks"]["bridge"]


def test_summary_shape() -> None:
    summary = pb.ContainerSummary(
        id="b" * 64, names=["/web"], image="busybox", command="sleep 9", created=5,
        state="running", status="Up 3 seconds", network_mode="default",
        ports=[pb.PortSummary(private_port=80, type="tcp"),
               pb.PortSummary(ip="0.0.0.0", private_port=81, public_port=8081, type="tcp")])
    out = summary_json(summary)
    assert out["Names"] == ["/web"] and out["Status"] == "Up 3 seconds"
    assert out["HostConfig"] == {"NetworkMode": "bridge"}
    assert out["Ports"] == [{"PrivatePort": 80, "Type": "tcp"},
                            {"IP": "0.0.0.0", "PrivatePort": 81, "PublicPort": 8081,
                             "Type": "tcp"}]
    assert "SizeRw" not in out and summary_json(summary, size=True)["SizeRw"] == 0


def test_wait_body_and_log_timestamps() -> None:
    assert wait_body(3, "") == {"StatusCode": 3, "Error": None}
    assert wait_body(-1, "boom") == {"StatusCode": -1, "Error": {"Message": "boom"}}
    assert log_timestamp(1_700_000_000_000_000_005) == b"2023-11-14T22:13:20.000000005Z "
