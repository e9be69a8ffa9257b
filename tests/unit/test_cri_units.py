"""Pure parts of the cri service, and the image service's hosts.toml reading."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from berth.image.v1 import image_pb2
from k8s.runtime.v1 import api_pb2 as cri
from services.common.errors import Internal, InvalidArgument, PeerUnavailable
from services.container.spec import rootfs_propagation
from services.cri.chunks import CHUNK, chunks
from services.cri.containers import merged_resources, parse_time
from services.cri.images import image_user, registry_auth
from services.cri.sandboxes import resolv_conf, runtime_refusal, seccomp_option
from services.image.registry import hosts_toml_urls


def test_hosts_toml_mirror_before_server(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text('server = "https://registry.k8s.io"\n'
                    '[host."http://127.0.0.1:5000/v2"]\n  capabilities = ["pull", "resolve"]\n'
                    '[host."https://push-only.example"]\n  capabilities = ["push"]\n')
    assert hosts_toml_urls(path, "registry.k8s.io") == ["http://127.0.0.1:5000",
                                                        "https://registry.k8s.io"]


def test_hosts_toml_server_only_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text('server = "http://127.0.0.1:5000"\n'
                    '[host."http://127.0.0.1:5000"]\n')
    assert hosts_toml_urls(path, "gcr.io") == ["http://127.0.0.1:5000"]
    path.write_text('[host."http://mirror.local:5000"]\n')
    assert hosts_toml_urls(path, "docker.io") == ["http://mirror.local:5000",
                                                  "https://registry-1.docker.io"]
    assert hosts_toml_urls(tmp_path / "missing.toml", "gcr.io") == []


def test_hosts_toml_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text("server = \n")
    with pytest.raises(Internal, match="invalid registry host config"):
        hosts_toml_urls(path, "gcr.io")


def test_pod_resolv_conf() -> None:
    dns = cri.DNSConfig(servers=["10.0.0.10", "10.0.0.11"], searches=["a.svc", "svc"],
                        options=["ndots:5"])
    assert resolv_conf(dns, "nameserver 1.1.1.1\n") == (
        "nameserver 10.0.0.10\nnameserver 10.0.0.11\nsearch a.svc svc\noptions ndots:5\n")
    assert resolv_conf(cri.DNSConfig(), "nameserver 1.1.1.1\n") == "nameserver 1.1.1.1\n"


def test_seccomp_choices(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    runtime_default = cri.SecurityProfile(profile_type=cri.SecurityProfile.RuntimeDefault)
    assert seccomp_option(runtime_default, "") == []
    assert seccomp_option(None, "") == ["seccomp=unconfined"]
    assert seccomp_option(None, "runtime/default") == []
    local = cri.SecurityProfile(profile_type=cri.SecurityProfile.Localhost,
                                localhost_ref=str(profile))
    assert seccomp_option(local, "") == ['seccomp={"defaultAction": "SCMP_ACT_ALLOW"}']
    assert seccomp_option(None, f"localhost/{profile}") == seccomp_option(local, "")
    with pytest.raises(InvalidArgument, match="cannot load seccomp profile"):
        seccomp_option(None, f"localhost/{tmp_path}/missing.json")


def test_registry_auth_from_kubelet() -> None:
    encoded = base64.b64encode(b"user:pa:ss").decode()
    auth = registry_auth(cri.AuthConfig(auth=encoded, server_address="reg.example"))
    assert (auth.username, auth.password, auth.server_address) == ("user", "pa:ss",
                                                                    "reg.example")
    token = registry_auth(cri.AuthConfig(identity_token="t", registry_token="r"))
    assert (token.identity_token, token.registry_token) == ("t", "r")


def test_image_user() -> None:
    assert image_user(image_pb2.ImageConfig(user="1000:1000")) == (1000, "")
    assert image_user(image_pb2.ImageConfig(user="nginx")) == (None, "nginx")
    assert image_user(image_pb2.ImageConfig()) == (0, "")


def test_parse_time() -> None:
    assert parse_time("0001-01-01T00:00:00Z") == 0
    assert parse_time("2023-11-14T22:13:20.000000123Z") == 1700000000_000000123
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000_000000000


def test_rootfs_propagation_follows_the_binds() -> None:
    shared = {"destination": "/a", "options": ["rbind", "rshared"]}
    slave = {"destination": "/b", "options": ["rbind", "rslave"]}
    private = {"destination": "/c", "options": ["rbind", "rprivate"]}
    assert rootfs_propagation([private, slave, shared]) == "rshared"
    assert rootfs_propagation([private, slave]) == "rslave"
    assert rootfs_propagation([private]) == ""


def test_streamed_lists_send_each_item_once_in_chunks() -> None:
    items = list(range(2 * CHUNK + 1))
    parts = list(chunks(items))
    assert [len(p) for p in parts] == [CHUNK, CHUNK, 1]
    assert [i for p in parts for i in p] == items
    assert list(chunks([])) == []


def test_an_update_changes_only_the_limits_it_sets() -> None:
    current = cri.LinuxContainerResources(
        cpu_shares=512, memory_limit_in_bytes=64 << 20, unified={"memory.high": "1"},
        hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=2 << 20)])
    merged = merged_resources(current, cri.LinuxContainerResources(
        memory_limit_in_bytes=128 << 20, unified={"pids.max": "10"},
        hugepage_limits=[cri.HugepageLimit(page_size="1GB", limit=1 << 30)]))
    assert merged == cri.LinuxContainerResources(
        cpu_shares=512, memory_limit_in_bytes=128 << 20,
        unified={"memory.high": "1", "pids.max": "10"},
        hugepage_limits=[cri.HugepageLimit(page_size="1GB", limit=1 << 30)])


def test_runc_refusal_in_containerds_words() -> None:
    refused = runtime_refusal(InvalidArgument(
        "failed to create task for container: failed to create shim task: OCI runtime "
        "create failed: runc create failed: exec: \"x\": executable file not found: unknown"))
    assert refused is not None and refused.code.name == "UNKNOWN"
    assert refused.message == (
        "failed to create containerd task: failed to create shim task: OCI runtime create "
        "failed: runc create failed: exec: \"x\": executable file not found: unknown")
    assert runtime_refusal(PeerUnavailable("container")) is None
    assert runtime_refusal(Internal("failed to start container abc: disk full")) is None
