"""Hostile input against a real engine: nothing a client sends (volume
options, bridge names, mount destinations, the container's own files) makes
the engine read or write outside its roots or touch host objects it did not
make, and bad input is a 400, never a 500."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pyroute2 import IPRoute

from tests.support.engine import Engine
from tests.support.images import files_tar


@pytest.fixture(scope="module")
def api(engine: Engine) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(uds=str(engine.socket))
    with httpx.Client(transport=transport, base_url="http://berth/v1.50", timeout=120) as client:
        yield client


@pytest.fixture
def host_bridge() -> Iterator[str]:
    """A bridge on the host that the engine did not make."""
    name = f"bh{uuid.uuid4().hex[:8]}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
    try:
        yield name
    finally:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=name):
                ipr.link("del", index=index)


def host_addresses(link: str) -> set[str]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=link)[0]
        return {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}


def build_context(dockerfile: str) -> bytes:
    """A build context tar holding only `dockerfile`."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return context.getvalue()


def link_exists(link: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=link))


# Volumes

def test_a_volume_device_is_never_a_mount_option(engine: Engine, busybox: str) -> None:
    """device=--all would be `mount --all` (every fstab entry) if it reached
    mount(8) as an option; it is the name of the tmpfs instead."""
    engine.docker("volume", "create", "-o", "type=tmpfs", "-o", "device=--all", "dashdev")
    mounts = engine.docker("run", "--rm", "-v", "dashdev:/x", busybox,
                           "grep", " /x ", "/proc/mounts").stdout.decode()
    assert mounts.split()[:3] == ["--all", "/x", "tmpfs"]
    engine.docker("volume", "rm", "dashdev")


def test_a_nul_in_a_volume_option_is_refused(api: httpx.Client) -> None:
    answer = api.post("/volumes/create", json={
        "Name": "nulopt", "DriverOpts": {"type": "tmpfs", "device": "a\0b"}})
    assert answer.status_code == 400, answer.text
    assert 'invalid option "device"' in answer.json()["message"]
    assert api.get("/volumes/nulopt").status_code == 404


def test_a_destination_climbing_out_fills_the_volume_from_the_image(
        engine: Engine, busybox: str) -> None:
    """`..` in a volume's destination stops at the container's root: the new
    volume gets the image's /etc, never the host's."""
    image_etc = engine.docker("run", "--rm", busybox, "ls", "-a", "/etc").stdout.split()
    in_volume = engine.docker("run", "--rm", "-v", "climb:/../../../../../../../etc", busybox,
                              "ls", "-a", "/etc").stdout.split()
    network_files = {b"hostname", b"hosts", b"resolv.conf"}   # bound by the runtime
    assert set(in_volume) - network_files == set(image_etc) - network_files
    engine.docker("volume", "rm", "climb")


@pytest.mark.parametrize("volume_options", [
    pytest.param([], id="data-directory"),
    pytest.param(["-o", "type=tmpfs", "-o", "device=tmpfs"], id="own-mount"),
])
def test_filling_a_shared_volume_never_writes_through_a_planted_link(
        engine: Engine, busybox: str, tmp_path: Path, volume_options: list[str]) -> None:
    """A running container keeps planting /vol/marker -> a host file while
    new containers fill the same (empty) volume from an image holding
    /seed/marker: the copy lands in a staging directory (beside the volume's
    data, or inside a volume that is a mount of its own) and is renamed in,
    so the host file keeps its content (before, cp wrote through the link
    within a few tries)."""
    host_file = tmp_path / "host-file"
    host_file.write_text("original\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox}\nRUN mkdir /seed && echo planted > /seed/marker\n")
    engine.docker("build", "-q", "-t", "seeded", str(tmp_path))
    engine.docker("volume", "create", *volume_options, "shared")
    try:
        engine.docker("run", "-d", "--name", "planter", "-v", "shared:/vol", busybox, "sh", "-c",
                      f"while true; do ln -s {host_file} /vol/marker; rm -f /vol/marker; done")
        for _ in range(25):
            engine.docker("run", "--rm", "-v", "shared:/seed", "seeded", "true")
            assert host_file.read_text() == "original\n"
            # Races the planter's own rm: either may remove it.
            engine.docker("exec", "planter", "rm", "-f", "/vol/marker", check=False)
        left = engine.docker("exec", "planter", "ls", "-A", "/vol").stdout.split()
        assert set(left) <= {b"marker"}    # no staging directory stays behind
    finally:
        engine.docker("rm", "-f", "planter", check=False)
        engine.docker("volume", "rm", "shared", check=False)


# Bridge names

@pytest.mark.parametrize("bridge", ["lo", "../x", "a\0b", "a b", "x:y"])
def test_a_bridge_name_that_is_no_new_bridge_is_refused(api: httpx.Client, bridge: str) -> None:
    before = host_addresses("lo")
    answer = api.post("/networks/create", json={
        "Name": "badbridge", "Options": {"com.docker.network.bridge.name": bridge}})
    assert answer.status_code == 400, answer.text
    assert api.get("/networks/badbridge").status_code == 404
    assert host_addresses("lo") == before


@pytest.mark.parametrize("mtu", ["99999999999", "65536", "10"])
def test_an_mtu_the_kernel_cannot_take_is_refused(api: httpx.Client, mtu: str) -> None:
    answer = api.post("/networks/create", json={
        "Name": "badmtu", "Options": {"com.docker.network.driver.mtu": mtu}})
    assert answer.status_code == 400, answer.text
    assert f"invalid MTU {mtu}" in answer.json()["message"]
    assert api.get("/networks/badmtu").status_code == 404


@pytest.mark.parametrize("host_ip, message", [
    ("127.0.0.1 tcp dport 1 drop", "invalid host IP address"),
    ("::1", "not supported by berth"),
])
def test_a_published_ports_host_ip_is_an_ipv4_address(
        engine: Engine, api: httpx.Client, busybox: str, host_ip: str, message: str) -> None:
    """The host IP ends up in the nftables ruleset's text: anything but an
    address is refused before it gets there, with a 400."""
    created = api.post("/containers/create", params={"name": "hostip"}, json={
        "Image": busybox, "Cmd": ["sleep", "60"], "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": host_ip, "HostPort": "0"}]}}})
    assert created.status_code == 201, created.text
    started = api.post("/containers/hostip/start")
    assert started.status_code == 400, started.text
    assert message in started.json()["message"]
    engine.docker("rm", "-f", "hostip")


def test_a_host_bridge_is_adopted_and_never_deleted(engine: Engine, api: httpx.Client,
                                                    host_bridge: str) -> None:
    option = f"com.docker.network.bridge.name={host_bridge}"
    engine.docker("network", "create", "-o", option, "adopter")
    again = api.post("/networks/create", json={
        "Name": "adopter2", "Options": {"com.docker.network.bridge.name": host_bridge}})
    assert again.status_code == 409, again.text
    assert "networks have same bridge name" in again.json()["message"]
    engine.docker("network", "rm", "adopter")
    assert link_exists(host_bridge)


# The container's own files

def test_exec_reads_the_containers_passwd_never_a_host_file(
        engine: Engine, busybox: str, tmp_path: Path) -> None:
    """A running container's /etc/passwd made a symlink to a host path: the
    user is looked up in the container's root, where that path is nothing."""
    host_passwd = tmp_path / "passwd"
    host_passwd.write_text("hostuser:x:4242:4242::/:/bin/sh\n")
    engine.docker("run", "-d", "--name", "passwdlink", busybox, "sleep", "600")
    engine.docker("exec", "passwdlink", "sh", "-c",
                  f"rm /etc/passwd && ln -s {host_passwd} /etc/passwd")
    result = engine.docker("exec", "-u", "hostuser", "passwdlink", "id", check=False)
    assert result.returncode != 0
    assert b"unable to find user hostuser" in result.stdout + result.stderr
    engine.docker("rm", "-f", "passwdlink")


def test_cp_through_a_proc_link_without_target_is_not_found(
        engine: Engine, busybox: str, api: httpx.Client) -> None:
    """/proc/self of the container's PID namespace names nothing for the
    engine: the path is not found, not a 500; a name too long or with a NUL
    is a 400."""
    engine.docker("run", "-d", "--name", "proclink", busybox, "sh", "-c",
                  "ln -s /proc/self/root /pr && sleep 600")
    for path, status in (("/pr/etc/hostname", 404), ("/" + "a" * 5000, 400),
                         ("/etc\0x", 400)):
        answer = api.get("/containers/proclink/archive", params={"path": path})
        assert answer.status_code == status, answer.text
    put = api.put("/containers/proclink/archive", params={"path": "/tmp\0x"},
                  content=build_context("FROM scratch\n"))
    assert put.status_code == 400, put.text
    engine.docker("rm", "-f", "proclink")


def test_cp_stat_never_sees_a_host_file_through_a_swapped_link(
        engine: Engine, busybox: str, api: httpx.Client) -> None:
    """The container swaps /d between a directory and a link to /etc while
    the path is stat'ed: the host's /etc/debian_version, which the image
    lacks, is never found (the stat runs chrooted, not on the host)."""
    assert Path("/etc/debian_version").exists()
    engine.docker("run", "-d", "--name", "swapper", busybox, "sh", "-c",
                  "while true; do mkdir /d; rmdir /d; ln -s /etc /d; rm /d; done")
    answers = [api.head("/containers/swapper/archive", params={"path": "/d/debian_version"})
               for _ in range(300)]
    assert {a.status_code for a in answers} == {404}
    engine.docker("rm", "-f", "swapper")


def test_cp_into_a_container_and_back(engine: Engine, busybox: str, tmp_path: Path) -> None:
    """The chrooted stat and extraction point keep docker cp whole: into a
    linked directory, with the container's user owning what comes in."""
    engine.docker("run", "-d", "--name", "cpround", "-u", "daemon", busybox, "sh", "-c",
                  "sleep 600")
    engine.docker("exec", "-u", "root", "cpround", "sh", "-c",
                  "mkdir /drop && chown daemon /drop && ln -s /drop /link")
    (tmp_path / "note").write_text("round trip\n")
    engine.docker("cp", "-a", str(tmp_path / "note"), "cpround:/link/")
    owner = engine.docker("exec", "cpround", "stat", "-c", "%U", "/drop/note").stdout
    assert owner.strip() == b"daemon"
    back = engine.docker("cp", "cpround:/link/note", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(back)) as tar:
        assert tar.extractfile("note").read() == b"round trip\n"
    engine.docker("rm", "-f", "cpround")


def test_an_update_with_a_nul_is_a_400(engine: Engine, busybox: str, api: httpx.Client
                                       ) -> None:
    engine.docker("run", "-d", "--name", "updated", busybox, "sleep", "600")
    answer = api.post("/containers/updated/update", json={"CpusetCpus": "0\0"})
    assert answer.status_code == 400, answer.text
    assert "it contains a NUL character" in answer.json()["message"]
    engine.docker("rm", "-f", "updated")


@pytest.mark.parametrize("ps_args", ["-ef\0x", "--no-such-option"])
def test_top_with_ps_arguments_ps_refuses_is_a_400(
        engine: Engine, busybox: str, api: httpx.Client, ps_args: str) -> None:
    engine.docker("run", "-d", "--name", "topped", busybox, "sleep", "600")
    answer = api.get("/containers/topped/top", params={"ps_args": ps_args})
    assert answer.status_code == 400, answer.text
    engine.docker("rm", "-f", "topped")


# Container config

@pytest.mark.parametrize("config, message", [
    ({"WorkingDir": "../../etc"},
     "the working directory '../../etc' is invalid, it needs to be an absolute path"),
    ({"WorkingDir": "/a\0b"}, "invalid working directory"),
    ({"Env": ["A\0B=1"]}, "invalid environment variable"),
    ({"Hostname": "a\0b"}, "invalid hostname"),
])
def test_a_config_the_kernel_cannot_take_is_refused_at_create(
        api: httpx.Client, busybox: str, config: dict, message: str) -> None:
    answer = api.post("/containers/create", json={"Image": busybox, **config})
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


@pytest.mark.parametrize("host_config", [
    {"Binds": ["/tmp\0:/x"]},
    {"Binds": ["/tmp:/x\0"]},
    {"Tmpfs": {"/x": "size=1\0"}},
    {"Devices": [{"PathOnHost": "/dev/null\0", "PathInContainer": "/dev/x",
                  "CgroupPermissions": "rwm"}]},
])
def test_a_nul_in_the_host_config_is_refused_at_create(
        api: httpx.Client, busybox: str, host_config: dict) -> None:
    answer = api.post("/containers/create", json={"Image": busybox, "HostConfig": host_config})
    assert answer.status_code == 400, answer.text
    assert "it contains a NUL character" in answer.json()["message"]


def test_a_docker_client_cannot_join_a_netns_file(api: httpx.Client, busybox: str) -> None:
    """ns:<path> is the CRI's network mode; to a Docker client it is the name
    of a network that does not exist, for a container as for a build."""
    answer = api.post("/containers/create", json={
        "Image": busybox, "HostConfig": {"NetworkMode": "ns:/proc/1/ns/net"}})
    assert answer.status_code == 404, answer.text
    assert answer.json()["message"] == "network ns:/proc/1/ns/net not found"
    built = api.post("/build", params={"networkmode": "ns:/proc/1/ns/net"},
                     content=build_context(f"FROM {busybox}\nRUN true\n"),
                     headers={"Content-Type": "application/x-tar"})
    assert built.status_code == 404, built.text


# Regular expressions: RE2, as Go's, never backtracking for minutes

EXPONENTIAL = "(a+)+$"     # Python's re takes 2^n steps on "a" * n + "b"
VICTIM = "a" * 32 + "b"


def test_a_name_filter_is_matched_in_linear_time(engine: Engine, busybox: str,
                                                 api: httpx.Client) -> None:
    engine.docker("create", "--name", VICTIM, busybox, "true")
    listed = api.get("/containers/json", params={
        "all": "1", "filters": json.dumps({"name": [EXPONENTIAL]})}, timeout=60)
    assert listed.status_code == 200 and listed.json() == []
    assert api.get("/containers/json", params={"all": "1"}, timeout=60).status_code == 200
    engine.docker("rm", VICTIM)


def test_a_log_options_regex_is_matched_in_linear_time(engine: Engine, busybox: str,
                                                       api: httpx.Client) -> None:
    engine.docker("run", "--name", "regexlog", "--log-opt", f"labels-regex={EXPONENTIAL}",
                  "--label", f"{VICTIM}=1", busybox, "echo", "logged")
    details = api.get("/containers/regexlog/logs", params={"stdout": "1", "details": "1"},
                      timeout=60)
    assert details.status_code == 200 and b"logged" in details.content
    engine.docker("rm", "regexlog")


def test_a_dockerignore_pattern_is_matched_in_linear_time(
        engine: Engine, busybox: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {busybox}\nCOPY . /ctx/\n")
    (tmp_path / ".dockerignore").write_text("**/" * 30 + "x\n")
    deep = tmp_path.joinpath(*["a"] * 40)
    deep.mkdir(parents=True)
    (deep / "b").write_text("kept\n")
    engine.docker("build", "-q", "-t", "ignored", str(tmp_path), timeout=60)
    listed = engine.docker("run", "--rm", "ignored", "cat", "/ctx/" + "a/" * 40 + "b").stdout
    assert listed == b"kept\n"


# Image archives

CONFIG = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": []}}).encode()


@pytest.mark.parametrize("members", [
    {"manifest.json": b'[{"Layers": []}]'},
    {"manifest.json": b'["x"]'},
    {"manifest.json": b'{"a": 1}'},
    {"manifest.json": b'[{"Config": 5}]'},
    {"manifest.json": b'[{"Config": "c", "RepoTags": [5]}]', "c": CONFIG},
    {"manifest.json": b'[{"Config": "c"}]', "c": b"not json"},
    {"manifest.json": b'[{"Config": "c"}]', "c": b'{"rootfs": {"diff_ids": [1]}}'},
    {"index.json": b'{"manifests": [{"digest": 5}]}'},
    {"index.json": b'{"manifests": "x"}'},
])
def test_a_malformed_image_archive_is_refused(api: httpx.Client, members: dict) -> None:
    answer = api.post("/images/load", params={"quiet": "1"}, content=files_tar(members))
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("invalid archive: ")


# Registries

class _HostileRegistry(BaseHTTPRequestHandler):
    """A registry whose manifest names a layer by a "digest" that climbs
    out of the engine's blob store to a tar on the host."""

    documents: dict[str, tuple[str, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        media_type, body = self.documents.get(self.path, ("application/json", b""))
        self.send_response(200 if self.path in self.documents else 404)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def hostile_registry(tmp_path: Path) -> Iterator[str]:
    host_tar = tmp_path / "host-layer.tar"
    with tarfile.open(host_tar, "w") as tar:
        secret = b"host secret\n"
        info = tarfile.TarInfo("stolen")
        info.size = len(secret)
        tar.addfile(info, io.BytesIO(secret))
    layer = host_tar.read_bytes()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["cat", "/stolen"]},
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "digest": "sha256:" + "../" * 40 + str(host_tar).lstrip("/"),
                    "size": len(layer)}]}).encode()
    _HostileRegistry.documents = {
        "/v2/": ("application/json", b"{}"),
        "/v2/evil/manifests/latest": (
            "application/vnd.docker.distribution.manifest.v2+json", manifest),
        f"/v2/evil/blobs/{config_digest}": ("application/octet-stream", config)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_registry_digest_never_names_a_host_file(engine: Engine, hostile_registry: str
                                                   ) -> None:
    pulled = engine.docker("pull", f"{hostile_registry}/evil", check=False)
    assert pulled.returncode != 0
    assert b"invalid digest" in pulled.stderr
    assert engine.docker("images", "-q", f"{hostile_registry}/evil").stdout == b""


@pytest.mark.parametrize("server", ["..", "../../tmp", "a\0b", "127.0.0.1:99999",
                                    "file:///etc/passwd"])
def test_a_login_server_that_is_no_registry_address_is_refused(api: httpx.Client,
                                                                server: str) -> None:
    """The server's host names its certs.d directory: `..` would climb out."""
    answer = api.post("/auth", json={"username": "u", "password": "p",
                                     "serveraddress": server})
    assert answer.status_code == 400, answer.text
    assert "invalid registry server address" in answer.json()["message"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/x.tar", "http://a\0b/x.tar",
                                 "file:///etc/passwd"])
def test_an_import_url_that_is_no_http_url_is_refused(api: httpx.Client, url: str) -> None:
    answer = api.post("/images/create", params={"fromSrc": url, "repo": "imported"})
    assert answer.status_code == 400, answer.text
    assert "invalid import source" in answer.json()["message"]


# Builds

def test_a_dockerfile_name_with_a_nul_is_not_found(api: httpx.Client, busybox: str) -> None:
    built = api.post("/build", params={"dockerfile": "Docker\0file"},
                     content=build_context(f"FROM {busybox}\n"),
                     headers={"Content-Type": "application/x-tar"})
    assert built.status_code == 400, built.text
    assert "Cannot locate specified Dockerfile" in built.json()["message"]
