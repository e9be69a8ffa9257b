"""The CNI module: config and result parsing, and the chain run against
small fake plugins (Python scripts that log what they were given)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest

from services.common.errors import Conflict, Internal, InvalidArgument
from services.network.cni import (
    Attachment,
    CniRunner,
    find_plugin,
    load_config,
    parse_config,
    parse_result,
    plugin_error,
    plugin_input,
)
from services.network.pods import port_mappings

CONFLIST = {"cniVersion": "1.0.0", "name": "pods", "plugins": [
    {"type": "bridge", "bridge": "cni0"},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def test_conflist_is_parsed() -> None:
    config = parse_config(json.dumps(CONFLIST), "10-pods.conflist")
    assert (config.name, config.cni_version) == ("pods", "1.0.0")
    assert [p["type"] for p in config.plugins] == ["bridge", "portmap"]
    assert config.supports_check and config.source == "10-pods.conflist"


def test_single_plugin_conf_becomes_a_list_of_one() -> None:
    conf = {"cniVersion": "0.4.0", "name": "single", "type": "bridge", "bridge": "cni0"}
    config = parse_config(json.dumps(conf), "10-single.conf")
    assert config.name == "single" and config.plugins == (conf,)
    assert config.supports_check


def test_check_needs_0_4_0_and_no_disable_check() -> None:
    old = dict(CONFLIST, cniVersion="0.3.1")
    assert not parse_config(json.dumps(old), "x").supports_check
    disabled = dict(CONFLIST, disableCheck=True)
    assert not parse_config(json.dumps(disabled), "x").supports_check


@pytest.mark.parametrize(("text", "reason"), [
    ("{", "invalid CNI network config x: Expecting"),
    ("[]", "not a JSON object"),
    (json.dumps(dict(CONFLIST, name="")), "no network name"),
    (json.dumps(dict(CONFLIST, cniVersion="0.2.0")), "cniVersion '0.2.0' is not one of"),
    (json.dumps(dict(CONFLIST, plugins=[])), "no plugins"),
    (json.dumps(dict(CONFLIST, plugins=[{"bridge": "cni0"}])), "a plugin without a type"),
])
def test_invalid_configs_are_refused(text: str, reason: str) -> None:
    with pytest.raises(Conflict, match=reason):
        parse_config(text, "x")


def test_first_config_file_by_name_wins(tmp_path: Path) -> None:
    (tmp_path / "99-last.conflist").write_text(json.dumps(dict(CONFLIST, name="last")))
    (tmp_path / "20-second.conf").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "second", "type": "bridge"}))
    (tmp_path / "10-notes.txt").write_text("not a config")
    assert load_config(tmp_path).name == "second"
    (tmp_path / "05-first.json").write_text(json.dumps(dict(CONFLIST, name="first")))
    assert load_config(tmp_path).name == "first"


def test_no_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Conflict, match=f"no CNI network config found in {tmp_path}"):
        load_config(tmp_path)
    with pytest.raises(Conflict, match="no CNI network config found"):
        load_config(tmp_path / "missing")


def test_plugins_are_found_in_the_first_dir_that_has_them(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "bridge").write_text("not executable")
    for directory in (first, second):
        (directory / "portmap").write_text("#!/bin/sh\n")
        (directory / "portmap").chmod(0o755)
    (second / "bridge").write_text("#!/bin/sh\n")
    (second / "bridge").chmod(0o755)
    assert find_plugin("portmap", [first, second]) == first / "portmap"
    assert find_plugin("bridge", [first, second]) == second / "bridge"
    with pytest.raises(Conflict, match=f'CNI plugin "nope" not found in {first}, {second}'):
        find_plugin("nope", [first, second])
    with pytest.raises(Conflict, match="invalid CNI plugin type"):
        find_plugin("../bridge", [first])


def test_cni_args_carry_the_pod() -> None:
    attachment = Attachment(container_id="abc", netns="/run/netns/abc", pod_name="web",
                            pod_namespace="default", pod_uid="u-1")
    assert attachment.cni_args() == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;"
                                     "K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;"
                                     "K8S_POD_UID=u-1")


def test_plugin_input_injects_name_prev_result_and_declared_capabilities() -> None:
    config = parse_config(json.dumps(CONFLIST), "x")
    mappings = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    bridge = plugin_input(config, config.plugins[0], None, mappings)
    assert bridge == {"type": "bridge", "bridge": "cni0", "name": "pods", "cniVersion": "1.0.0"}
    portmap = plugin_input(config, config.plugins[1], {"ips": []}, mappings)
    assert portmap["prevResult"] == {"ips": []}
    assert portmap["runtimeConfig"] == mappings


RESULT_040 = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                   {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                   {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/x"}],
    "ips": [{"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
            {"version": "4", "address": "10.0.0.9/24", "gateway": "10.0.0.1", "interface": 0},
            {"version": "4", "address": "10.88.0.5/24", "gateway": "10.88.0.1", "interface": 2}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"],
            "options": ["ndots:5"]},
}


def test_result_keeps_the_pods_addresses_ipv4_first() -> None:
    result = parse_result("pods", RESULT_040)
    assert [str(a.address) for a in result.addresses] == ["10.88.0.5/24", "fd00::5/64"]
    first = result.addresses[0]
    assert (first.gateway, first.ifname, first.mac) == ("10.88.0.1", "eth0", "cc:cc:cc:cc:cc:cc")
    assert result.dns.nameservers == ("10.96.0.10",)
    assert result.dns.search == ("svc.cluster.local",) and result.dns.options == ("ndots:5",)


def test_result_of_spec_1_0_without_interfaces() -> None:
    result = parse_result("pods", {"cniVersion": "1.0.0",
                                   "ips": [{"address": "10.88.0.7/16"}]})
    assert result.addresses[0].address == ipaddress.ip_interface("10.88.0.7/16")
    assert result.addresses[0].gateway == "" and result.dns.nameservers == ()


def test_invalid_result_is_an_internal_error() -> None:
    with pytest.raises(Internal, match="invalid result of CNI network pods: bad IP entry"):
        parse_result("pods", {"ips": [{"address": "10.88.0.300/24"}]})


def test_error_results_become_clear_errors() -> None:
    config = parse_config(json.dumps(CONFLIST), "x")
    reply = json.dumps({"cniVersion": "1.0.0", "code": 7, "msg": "invalid config",
                        "details": "bridge name too long"}).encode()
    error = plugin_error("ADD", config, "bridge", 1, reply, b"")
    assert isinstance(error, Conflict)
    assert error.message == ('CNI plugin "bridge" failed (ADD on network "pods"): invalid '
                             'config: bridge name too long (CNI error code 7)')
    busy = json.dumps({"code": 11, "msg": "try again"}).encode()
    assert isinstance(plugin_error("ADD", config, "bridge", 1, busy, b""), Internal)
    crashed = plugin_error("DEL", config, "portmap", 2, b"panic", b"goroutine 1\n")
    assert isinstance(crashed, Internal) and crashed.message.endswith("goroutine 1")


def test_port_mappings_keep_those_with_a_host_port() -> None:
    assert port_mappings([("80/tcp", "", "8080"), ("53/udp", "127.0.0.1", "5353"),
                          ("81/tcp", "", ""), ("82/tcp", "", "0")]) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]
    with pytest.raises(InvalidArgument, match="single port"):
        port_mappings([("80/tcp", "", "8080-8081")])


FAKE_PLUGIN = """
import json, os, sys
conf = json.load(sys.stdin)
env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
with open(conf["log"], "a") as log:
    log.write(json.dumps({"type": conf["type"], "env": env, "conf": conf}) + "\\n")
if conf.get("fail") == os.environ["CNI_COMMAND"]:
    print(json.dumps({"cniVersion": conf["cniVersion"], "code": 11, "msg": "busy"}))
    sys.exit(1)
if os.environ["CNI_COMMAND"] == "ADD":
    result = conf.get("prevResult") or {
        "cniVersion": conf["cniVersion"],
        "interfaces": [{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}],
        "ips": [{"address": "10.88.0.5/24", "gateway": "10.88.0.1", "interface": 0}]}
    result.setdefault("dns", {"nameservers": []})["nameservers"].append(conf["type"])
    print(json.dumps(result))
"""


class FakeChain:
    def __init__(self, root: Path, version: str = "1.0.0", fail: str = "") -> None:
        self.bin_dir, self.conf_dir, self.log = root / "bin", root / "conf", root / "log"
        self.bin_dir.mkdir()
        self.conf_dir.mkdir()
        for name in ("first", "second"):
            plugin = self.bin_dir / name
            plugin.write_text(f"#!{sys.executable}\n{FAKE_PLUGIN}")
            plugin.chmod(0o755)
        plugins = [{"type": "first", "log": str(self.log)},
                   {"type": "second", "log": str(self.log), "fail": fail,
                    "capabilities": {"portMappings": True}}]
        (self.conf_dir / "10-fake.conflist").write_text(json.dumps(
            {"cniVersion": version, "name": "fake", "plugins": plugins}))
        self.runner = CniRunner(self.conf_dir, [self.bin_dir], root / "cache")

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


ATTACHMENT = Attachment(container_id="pod1", netns="/run/netns/pod1", pod_name="web",
                        pod_namespace="ns", pod_uid="u1",
                        port_mappings=[{"hostPort": 8080, "containerPort": 80,
                                        "protocol": "tcp"}])


def test_chain_add_check_del(tmp_path: Path) -> None:
    chain = FakeChain(tmp_path)
    assert chain.runner.status() == ""
    result = asyncio.run(chain.runner.add(ATTACHMENT))
    assert [str(a.address) for a in result.addresses] == ["10.88.0.5/24"]
    assert result.dns.nameservers == ("first", "second")
    first, second = chain.calls()
    assert (first["type"], second["type"]) == ("first", "second")
    assert first["env"] == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "pod1", "CNI_NETNS": "/run/netns/pod1",
        "CNI_IFNAME": "eth0", "CNI_PATH": str(chain.bin_dir),
        "CNI_ARGS": ATTACHMENT.cni_args()}
    assert "prevResult" not in first["conf"] and "runtimeConfig" not in first["conf"]
    assert second["conf"]["prevResult"]["dns"]["nameservers"] == ["first"]
    assert second["conf"]["runtimeConfig"] == {"portMappings": ATTACHMENT.port_mappings}
    assert chain.runner.cached_result("pod1") == result

    chain.log.unlink()
    asyncio.run(chain.runner.check("pod1"))
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in chain.calls()] == [
        ("first", "CHECK"), ("second", "CHECK")]
    assert chain.calls()[0]["conf"]["prevResult"]["dns"]["nameservers"] == ["first", "second"]

    chain.log.unlink()
    (chain.conf_dir / "10-fake.conflist").unlink()     # DEL uses the cached config
    asyncio.run(chain.runner.delete("pod1"))
    calls = chain.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [
        ("second", "DEL"), ("first", "DEL")]
    assert calls[0]["env"]["CNI_ARGS"] == ATTACHMENT.cni_args()
    assert calls[0]["conf"]["prevResult"]["ips"][0]["address"] == "10.88.0.5/24"
    assert chain.runner.cached_result("pod1") is None
    chain.log.unlink()
    asyncio.run(chain.runner.delete("pod1"))
    assert chain.calls() == []
    assert "no CNI network config found" in chain.runner.status()


def test_failed_add_can_still_be_deleted(tmp_path: Path) -> None:
    chain = FakeChain(tmp_path, fail="ADD")
    with pytest.raises(Internal, match=r'CNI plugin "second" failed \(ADD on network "fake"\): '
                                       r"busy \(CNI error code 11\)"):
        asyncio.run(chain.runner.add(ATTACHMENT))
    assert chain.runner.cached_result("pod1") is None
    chain.log.unlink()
    asyncio.run(chain.runner.delete("pod1"))
    assert [(c["type"], "prevResult" in c["conf"]) for c in chain.calls()] == [
        ("second", False), ("first", False)]


def test_del_tries_every_plugin_and_raises_the_failure(tmp_path: Path) -> None:
    chain = FakeChain(tmp_path, fail="DEL")
    asyncio.run(chain.runner.add(ATTACHMENT))
    chain.log.unlink()
    with pytest.raises(Internal, match='"second" failed'):
        asyncio.run(chain.runner.delete("pod1"))
    assert [c["type"] for c in chain.calls()] == ["second", "first"]
    assert chain.runner.cached_result("pod1") is None


def test_check_is_skipped_before_0_4_0(tmp_path: Path) -> None:
    chain = FakeChain(tmp_path, version="0.3.1")
    asyncio.run(chain.runner.add(ATTACHMENT))
    chain.log.unlink()
    asyncio.run(chain.runner.check("pod1"))
    assert chain.calls() == []
    asyncio.run(chain.runner.delete("pod1"))
    assert all("prevResult" not in c["conf"] for c in chain.calls())
    with pytest.raises(Conflict, match="no CNI result cached for pod1"):
        asyncio.run(chain.runner.check("pod1"))


def test_missing_plugin_fails_before_anything_runs(tmp_path: Path) -> None:
    chain = FakeChain(tmp_path)
    os.unlink(chain.bin_dir / "second")
    assert 'CNI plugin "second" not found' in chain.runner.status()
    with pytest.raises(Conflict, match='CNI plugin "second" not found'):
        asyncio.run(chain.runner.add(ATTACHMENT))
    assert chain.calls() == []


def test_container_id_is_checked(tmp_path: Path) -> None:
    chain = FakeChain(tmp_path)
    with pytest.raises(InvalidArgument, match="invalid CNI container ID"):
        asyncio.run(chain.runner.add(Attachment(container_id="../x", netns="/x")))
