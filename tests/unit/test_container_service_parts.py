"""Pure parts of the container service: names, config merge, checks, spec,
seccomp, log parsing, detach keys, status texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.container.v1 import container_pb2 as pb
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.common.errors import InvalidArgument
from services.container import (
    attach,
    cgroups,
    configs,
    logs,
    names,
    seccomp,
    spec,
    update,
    views,
)
from services.container.runtime import signal_number


def test_names():
    assert names.validate("/web.1_a-b") == "web.1_a-b"
    for bad in ("a", "-x", "has space", "x/y"):
        with pytest.raises(InvalidArgument, match=r"Invalid container name"):
            names.validate(bad)
    adjective, _, surname = names.generate().partition("_")
    assert adjective and surname


def _strings(*values: str) -> types_pb2.StringList:
    return types_pb2.StringList(values=values)


def test_image_config_merges_like_docker():
    image = image_pb2.ImageConfig(env=["PATH=/bin", "A=image"], cmd=_strings("sh"),
                                  entrypoint=_strings("/entry"), working_dir="/w",
                                  labels={"l": "image", "m": "image"}, exposed_ports=["80/tcp"])
    config = pb.ContainerConfig(env=["A=user"], labels={"l": "user"})
    configs.merge_image_config(config, image)
    assert list(config.env) == ["PATH=/bin", "A=user"]
    assert configs.command(config) == ["/entry", "sh"]
    assert config.working_dir == "/w" and dict(config.labels) == {"l": "user", "m": "image"}
    user_cmd = pb.ContainerConfig(cmd=_strings("echo", "hi"))
    configs.merge_image_config(user_cmd, image)
    assert configs.command(user_cmd) == ["/entry", "echo", "hi"]
    no_entrypoint = pb.ContainerConfig(entrypoint=_strings())
    configs.merge_image_config(no_entrypoint, image)
    assert configs.command(no_entrypoint) == ["sh"]


@pytest.mark.parametrize(("resources", "message"), [
    (pb.Resources(memory=1024), "Minimum memory limit allowed is 6MB"),
    (pb.Resources(memory_swap=64 << 20),
     "You should always set the Memory limit when using Memoryswap limit, see usage"),
    (pb.Resources(memory=64 << 20, memory_swap=32 << 20),
     "Minimum memoryswap limit should be larger than memory limit, see usage"),
    (pb.Resources(nano_cpus=1, cpu_quota=5000),
     "Conflicting options: Nano CPUs and CPU Quota cannot both be set"),
    (pb.Resources(cpu_quota=10), "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
])
def test_resource_checks(resources, message):
    with pytest.raises(InvalidArgument) as caught:
        configs.validate_resources(resources)
    assert caught.value.message == message


def test_restart_policy_checks():
    with pytest.raises(InvalidArgument, match="unknown policy 'sometimes'"):
        configs.validate_restart_policy(pb.HostConfig(
            restart_policy=pb.RestartPolicy(name="sometimes")))
    with pytest.raises(InvalidArgument, match="can only be used with 'on-failure'"):
        configs.validate_restart_policy(pb.HostConfig(
            restart_policy=pb.RestartPolicy(name="always", maximum_retry_count=2)))


def test_signals():
    assert signal_number("KILL") == signal_number("sigkill") == signal_number("9") == 9
    assert signal_number("SIGTERM") == 15
    for bad in ("FOO", "0", "99"):
        with pytest.raises(ValueError):
            signal_number(bad)


def test_capabilities():
    default = spec.capabilities(pb.HostConfig())
    assert "CAP_NET_RAW" in default and "CAP_SYS_ADMIN" not in default
    assert spec.capabilities(pb.HostConfig(cap_drop=["ALL"], cap_add=["chown"])) == [
        "CAP_CHOWN"]
    assert "CAP_KILL" not in spec.capabilities(pb.HostConfig(cap_drop=["KILL"]))
    with pytest.raises(InvalidArgument, match='unknown capability: "CAP_NOPE"'):
        spec.capabilities(pb.HostConfig(cap_add=["NOPE"]))


def test_resources_in_oci_form():
    res = spec.resources(pb.Resources(memory=64 << 20, nano_cpus=1_500_000_000,
                                      pids_limit=50, cpu_shares=512), privileged=False)
    assert res["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert res["cpu"] == {"period": 100000, "quota": 150000, "shares": 512}
    assert res["pids"] == {"limit": 50}
    assert res["devices"][0] == {"allow": False, "access": "rwm"}


def test_device_cgroup_rules_in_oci_form():
    assert spec.device_cgroup_rules(["c 42:* rmw", "b 8:16 r", "a *:* m"]) == [
        {"allow": True, "type": "c", "major": 42, "access": "rmw"},
        {"allow": True, "type": "b", "major": 8, "minor": 16, "access": "r"},
        {"allow": True, "type": "a", "access": "m"}]
    for bad in ("bad rule", "c 42:* rwmx", "x 1:2 r", "c 1:2 r\n", "c 1 r"):
        with pytest.raises(InvalidArgument) as caught:
            spec.device_cgroup_rules([bad])
        assert caught.value.message == f"invalid device cgroup rule format: '{bad}'"
    huge = f"c {1 << 63}:1 r"
    with pytest.raises(InvalidArgument) as caught:
        spec.device_cgroup_rules([huge])
    assert caught.value.message == f"invalid major value in device cgroup rule format: '{huge}'"


def test_blkio_devices_in_oci_form():
    res = pb.Resources(blkio_weight_device=[pb.WeightDevice(path="/dev/null", weight=300)],
                       blkio_device_write_iops=[pb.ThrottleDevice(path="/dev/zero", rate=9)])
    assert spec.block_io(res) == {
        "weightDevice": [{"major": 1, "minor": 3, "weight": 300}],
        "throttleWriteIOPSDevice": [{"major": 1, "minor": 5, "rate": 9}]}
    missing = pb.Resources(blkio_device_read_bps=[pb.ThrottleDevice(path="/nonexistent")])
    with pytest.raises(InvalidArgument) as caught:
        spec.block_io(missing)
    assert caught.value.message == "stat /nonexistent: no such file or directory"
    with pytest.raises(InvalidArgument, match="^stat /dev/\x00: invalid argument$"):
        spec.device_numbers("/dev/\x00")


@pytest.mark.parametrize(("host", "message"), [
    (pb.HostConfig(storage_opt={"size": "10G"}),
     "--storage-opt is supported only for overlay over xfs with 'pquota' mount option"),
    (pb.HostConfig(storage_opt={"Foo": "bar"}), "Unknown option foo"),
    (pb.HostConfig(userns_mode="private"), "--userns: invalid USER mode"),
    (pb.HostConfig(resources=pb.Resources(device_cgroup_rules=["c 1 r"])),
     "invalid device cgroup rule format: 'c 1 r'"),
    (pb.HostConfig(resources=pb.Resources(blkio_weight=5)),
     "Range of blkio weight is from 10 to 1000"),
])
def test_host_config_checks(host, message):
    config = pb.ContainerConfig(cmd=_strings("true"))
    with pytest.raises(InvalidArgument) as caught:
        configs.validate(config, host)
    assert caught.value.message == message


def test_host_config_modes_docker_accepts():
    config = pb.ContainerConfig(cmd=_strings("true"))
    for mode in ("", "host", "host:anything"):
        configs.validate(config, pb.HostConfig(userns_mode=mode, storage_opt={}))


def test_rlimits_never_exceed_the_host():
    hard = spec.host_hard_limit("nofile")
    limits = spec.rlimits([pb.Ulimit(name="nofile", soft=hard * 10, hard=hard * 10)])
    assert limits == [{"type": "RLIMIT_NOFILE", "hard": hard, "soft": hard}]
    with pytest.raises(InvalidArgument):
        spec.rlimits([pb.Ulimit(name="bogus", soft=1, hard=1)])


def test_seccomp_profile_follows_caps():
    plain = seccomp.default_profile(set(spec.DEFAULT_CAPS))
    admin = seccomp.default_profile(set(spec.DEFAULT_CAPS) | {"CAP_SYS_ADMIN"})
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO" and plain["architectures"]

    def allowed(profile: dict) -> set[str]:
        return {name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
                and not rule.get("args") for name in rule["names"]}
    assert "mount" not in allowed(plain) and "mount" in allowed(admin)
    assert "read" in allowed(plain)


def test_k8s_log_lines_are_joined_and_timed(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"2024-01-02T03:04:05.123456789+00:00 stdout P par\n"
                     b"2024-01-02T03:04:05.2+00:00 stdout F tial\n"
                     b"2024-01-02T05:04:06.000000001+02:00 stderr F err\n"
                     b"2024-01-02T03:04:07Z stdout F half")
    lines, end = logs.read_lines(path)
    assert [(line.stream, line.data) for line in lines] == [
        ("stdout", b"partial\n"), ("stderr", b"err\n")]
    assert lines[0].time_nano == 1704164645_200000000
    assert lines[1].time_nano == 1704164646_000000001
    assert end == path.read_bytes().rfind(b"\n") + 1
    assert logs.select(lines, {"stdout", "stderr"}, 0, 0, "1") == lines[1:]
    assert logs.select(lines, {"stdout"}, 0, 0, "all") == lines[:1]


def test_detach_keys():
    assert attach.parse_detach_keys("") == b"\x10\x11"
    assert attach.parse_detach_keys("ctrl-a,x") == b"\x01x"
    with pytest.raises(InvalidArgument):
        attach.parse_detach_keys("ctrl-1")
    scanner = attach._DetachScanner(b"\x10\x11")
    assert scanner.feed(b"ab\x10") == (b"ab", False)
    assert scanner.feed(b"c") == (b"\x10c", False)
    assert scanner.feed(b"\x10\x11rest") == (b"", True)
    assert attach.detach_keys("", none=True) == b""
    assert attach.detach_keys("", none=False) == b"\x10\x11"
    with pytest.raises(InvalidArgument, match="cannot be given with no detach keys"):
        attach.detach_keys("ctrl-a", none=True)


def test_human_durations_and_times():
    assert views.human_duration(0.5) == "Less than a second"
    assert views.human_duration(30) == "30 seconds"
    assert views.human_duration(90) == "About a minute"
    assert views.human_duration(3600 * 5) == "5 hours"
    assert logs.rfc3339(0) == logs.ZERO_TIME
    assert logs.rfc3339(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"


def test_security_opt_keys():
    spec.check_security_opt(["no-new-privileges", "seccomp=unconfined", "label:disable",
                             "apparmor=unconfined"])
    with pytest.raises(InvalidArgument, match='invalid --security-opt 2: "bogus=1"'):
        spec.check_security_opt(["bogus=1"])


@pytest.fixture
def cgroup_v1_root(tmp_path, monkeypatch):
    """A cgroup v1 layout with a hugetlb hierarchy, where the code looks for /sys/fs/cgroup."""
    (tmp_path / "hugetlb" / "pod" / "c1").mkdir(parents=True)
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    monkeypatch.setattr(cgroups, "hugepage_sizes", lambda: ["2MB", "1GB"])
    return tmp_path


def test_hugepage_limits_reach_the_spec_where_the_host_has_hugetlb(cgroup_v1_root):
    res = pb.Resources(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4 << 20)])
    assert spec.resources(res, False)["hugepageLimits"] == [{"pageSize": "2MB",
                                                             "limit": 4 << 20}]
    (cgroup_v1_root / "hugetlb" / "pod" / "c1").rmdir()
    (cgroup_v1_root / "hugetlb" / "pod").rmdir()
    (cgroup_v1_root / "hugetlb").rmdir()
    assert "hugepageLimits" not in spec.resources(res, False)


def test_an_update_of_hugepage_limits_writes_the_hugetlb_cgroup(cgroup_v1_root):
    host = pb.HostConfig(resources=pb.Resources(hugepage_limits=[
        pb.HugepageLimit(page_size="2MB", limit=4 << 20),
        pb.HugepageLimit(page_size="1GB", limit=0)]))
    request = pb.UpdateContainerRequest(resources=pb.Resources(hugepage_limits=[
        pb.HugepageLimit(page_size="2MB", limit=8 << 20)]))
    merged = update.merge(host, request)
    assert {h.page_size: h.limit for h in merged.resources.hugepage_limits} == {
        "2MB": 8 << 20, "1GB": 0}
    update.apply_cgroup_files(request.resources, "/pod/c1")
    limit = cgroup_v1_root / "hugetlb" / "pod" / "c1" / "hugetlb.2MB.limit_in_bytes"
    assert limit.read_text() == str(8 << 20)


def test_hugepage_sizes_and_unified_files_are_checked(cgroup_v1_root):
    with pytest.raises(InvalidArgument, match=r"invalid hugepage size '3MB': this host has "
                                              r"2MB, 1GB"):
        configs.validate_resources(pb.Resources(hugepage_limits=[
            pb.HugepageLimit(page_size="3MB", limit=1)]))
    with pytest.raises(InvalidArgument, match=r"unified resources are cgroup v2 files, and "
                                              r"this host has cgroup v1"):
        configs.validate_resources(pb.Resources(unified={"memory.high": "1"}))


def test_the_hosts_hugepage_sizes_are_named_as_the_oci_spec_names_them():
    sizes = cgroups.hugepage_sizes()
    assert all(s[:-2].isdigit() and s[-2:] in ("KB", "MB", "GB") for s in sizes)
    if Path("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir():
        assert "2MB" in sizes
