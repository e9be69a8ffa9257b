"""Docker Compose 1.29 (Debian's docker-compose) driving berth unchanged."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support.compose import COMPOSE, ComposeProject, compose_project
from tests.support.engine import Engine
from tests.support.polling import wait_for
from tests.support.registry import Registry, free_port

pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed")

HTTPD = ("sh -c 'mkdir -p /www && echo hello > /www/index.html"
         " && exec httpd -f -p 80 -h /www'")
HTTP_GET = r'echo -e "GET / HTTP/1.0\r\n\r\n" | nc web 80'


@pytest.fixture
def project(engine: Engine, busybox: str, tmp_path: Path,
            request: pytest.FixtureRequest) -> Iterator[ComposeProject]:
    """A project named after the test, taken down at the end."""
    name = "c" + request.node.name.removeprefix("test_").replace("_", "")[:20]
    with compose_project(engine, tmp_path, name) as running:
        yield running


def test_two_services_reach_each_other_by_service_name(engine: Engine,
                                                       project: ComposeProject) -> None:
    project.write(f"""
version: "3.8"
services:
  web:
    image: busybox:latest
    command: {HTTPD}
  client:
    image: busybox:latest
    command: sleep 300
""")
    project("up", "-d")
    states = project.ps_states()
    assert sorted(states) == [f"{project.name}_client_1", f"{project.name}_web_1"]
    assert all(" Up " in f"{line} " for line in states.values()), states

    def served() -> bool:
        result = project("exec", "-T", "client", "sh", "-c", HTTP_GET, check=False)
        return result.stdout.endswith("hello\n")
    wait_for(served)

    network = f"{project.name}_default"
    assert network in engine.docker("network", "ls", "--format", "{{.Name}}").stdout.decode()
    project("down", "-t", "1")
    assert project.containers() == []
    names = engine.docker("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
    assert network not in names


def test_published_port_reachable_from_host(project: ComposeProject) -> None:
    port = free_port()
    project.write(f"""
version: "3.8"
services:
  web:
    image: busybox:latest
    command: {HTTPD}
    ports: ["127.0.0.1:{port}:80"]
""")
    project("up", "-d")
    assert f"127.0.0.1:{port}->80/tcp" in project("ps").stdout

    def served() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                return reply.read() == b"hello\n"
        except OSError:
            return False
    wait_for(served)


def test_named_volume_shared_persisted_and_removed(engine: Engine,
                                                   project: ComposeProject) -> None:
    project.write("""
version: "3.8"
services:
  writer:
    image: busybox:latest
    command: sh -c 'echo written > /data/msg && exec sleep 300'
    volumes: ["shared:/data"]
  reader:
    image: busybox:latest
    command: sleep 300
    volumes: ["shared:/data"]
volumes:
  shared:
""")
    volume = f"{project.name}_shared"
    project("up", "-d")

    def shared() -> bool:
        result = project("exec", "-T", "reader", "cat", "/data/msg", check=False)
        return result.stdout == "written\n"
    wait_for(shared)
    project("exec", "-T", "reader", "sh", "-c", "echo kept > /data/kept")

    project("down", "-t", "1")
    assert volume in engine.docker("volume", "ls", "-q").stdout.decode().split()
    project("up", "-d")
    assert project("exec", "-T", "reader", "cat", "/data/kept").stdout == "kept\n"

    project("down", "-v", "-t", "1")
    assert volume not in engine.docker("volume", "ls", "-q").stdout.decode().split()


def test_depends_on_environment_logs_run_stop_start(engine: Engine,
                                                    project: ComposeProject) -> None:
    project.write("""
version: "3.8"
services:
  db:
    image: busybox:latest
    command: sh -c 'echo "greeting=$$GREETING" && exec sleep 300'
    environment:
      GREETING: from-compose
    restart: "no"
  client:
    image: busybox:latest
    command: ["sleep", "300"]
    depends_on: [db]
""")
    result = project("up", "-d", "client")
    assert f"Creating {project.name}_db_1" in result.stderr
    db = f"{project.name}_db_1"
    inspect = json.loads(engine.docker("inspect", db).stdout)[0]
    assert inspect["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert "GREETING=from-compose" in inspect["Config"]["Env"]
    assert inspect["Config"]["Cmd"] == ["sh", "-c", 'echo "greeting=$GREETING" && exec sleep 300']
    wait_for(lambda: project.log_lines("db") == ["greeting=from-compose"])

    run = project("run", "--rm", "client", "echo", "hi")
    assert run.stdout.strip().splitlines()[-1] == "hi"
    assert len(project.containers()) == 2

    project("stop", "-t", "1")
    assert all("Exit" in line for line in project.ps_states().values())
    project("start")
    assert all(" Up " in f"{line} " for line in project.ps_states().values())


def test_recreate_on_change_and_scale_with_api_pinned_below_1_45(engine: Engine,
                                                                  project: ComposeProject) -> None:
    """Compose 1.29 reads an image's ContainerConfig to recreate a container;
    Docker (and berth) omit it from API 1.45 on, so as with Docker 25+ the
    project pins COMPOSE_API_VERSION=1.44."""
    template = f"""
version: "3.8"
services:
  web:
    image: busybox:latest
    command: {HTTPD}
  client:
    image: busybox:latest
    command: sleep {{}}
"""
    project.write(template.format(300))
    project("up", "-d", api_version="1.44")
    client = f"{project.name}_client_1"
    first = json.loads(engine.docker("inspect", client).stdout)[0]["Id"]

    project.write(template.format(301))
    result = project("up", "-d", api_version="1.44")
    assert f"{project.name}_web_1 is up-to-date" in result.stderr
    recreated = json.loads(engine.docker("inspect", client).stdout)[0]
    assert recreated["Id"] != first and recreated["Config"]["Cmd"] == ["sleep", "301"]

    project("up", "-d", "--scale", "client=2", api_version="1.44")
    assert len(project.containers()) == 3

    def served() -> bool:
        result = project("exec", "-T", "--index=2", "client", "sh", "-c", HTTP_GET,
                         check=False, api_version="1.44")
        return result.stdout.endswith("hello\n")
    wait_for(served)


def test_healthy_dependency_networks_aliases_and_service_options(engine: Engine,
                                                                  project: ComposeProject) -> None:
    (project.dir / "vars.env").write_text("FROM_FILE=yes\n")
    project.write("""
services:
  db:
    image: busybox:latest
    command: sh -c 'sleep 1; touch /tmp/ready; exec sleep 300'
    init: true
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 10
    networks:
      back:
        aliases: [database]
    tmpfs: [/scratch]
    env_file: [vars.env]
    labels:
      tier: data
    extra_hosts: ["somehost:10.1.2.3"]
    mem_limit: 64m
  app:
    image: busybox:latest
    command: sleep 300
    depends_on:
      db:
        condition: service_healthy
    networks: [back, front]
networks:
  back:
  front:
""")
    project("up", "-d")
    db = f"{project.name}_db_1"
    assert "Up (healthy)" in project.ps_states()[db]
    inspect = json.loads(engine.docker("inspect", db).stdout)[0]
    assert inspect["Config"]["Labels"]["tier"] == "data"
    assert inspect["HostConfig"]["Memory"] == 64 * 1024 * 1024
    address = inspect["NetworkSettings"]["Networks"][f"{project.name}_back"]["IPAddress"]
    assert address

    app = json.loads(engine.docker("inspect", f"{project.name}_app_1").stdout)[0]
    assert sorted(app["NetworkSettings"]["Networks"]) == [f"{project.name}_back",
                                                          f"{project.name}_front"]
    lookup = project("exec", "-T", "app", "nslookup", "database").stdout
    assert address in lookup

    script = "echo $FROM_FILE; grep somehost /etc/hosts; grep -c ' /scratch tmpfs' /proc/mounts"
    out = project("exec", "-T", "db", "sh", "-c", script).stdout.split("\n")
    assert out[0] == "yes" and out[1].split() == ["10.1.2.3", "somehost"] and out[2] == "1"
    assert "docker-init" in project("exec", "-T", "db", "cat", "/proc/1/cmdline").stdout


def test_foreground_up_aborts_and_returns_exit_code(project: ComposeProject) -> None:
    project.write("""
services:
  server:
    image: busybox:latest
    command: sh -c 'trap "exit 0" TERM; echo server-up; sleep 300 & wait'
  job:
    image: busybox:latest
    command: sh -c 'echo job-ran; exit 3'
    depends_on: [server]
""")
    result = project("up", "--no-color", "--abort-on-container-exit", "--exit-code-from",
                     "job", check=False)
    assert result.returncode == 3, result.stderr
    printed = {tuple(part.strip() for part in line.split("|", 1))
               for line in result.stdout.splitlines() if "|" in line}
    assert ("job_1", "job-ran") in printed
    assert "Exit" in project.ps_states()[f"{project.name}_server_1"]


def test_pull_and_push_through_a_registry(engine: Engine, project: ComposeProject,
                                          registry: Registry) -> None:
    remote = f"{registry.address}/compose/busybox:1"
    engine.docker("tag", "busybox:latest", remote)
    engine.docker("push", remote)
    engine.docker("rmi", remote)
    project.write(f"""
services:
  app:
    image: {remote}
    command: sh -c 'echo pulled'
""")
    project("pull")
    assert engine.docker("image", "inspect", remote).returncode == 0
    engine.docker("rmi", remote)
    project("up", "-d")
    wait_for(lambda: project.log_lines("app") == ["pulled"])
    project("down", "-t", "1", "--rmi", "all")

    (project.dir / "app").mkdir()
    (project.dir / "app" / "Dockerfile").write_text("FROM busybox:latest\nLABEL pushed=yes\n")
    pushed = f"{registry.address}/compose/built:1"
    project.write(f"""
services:
  built:
    build: ./app
    image: {pushed}
""")
    project("build")
    project("push")
    engine.docker("rmi", pushed)
    project("pull")
    labels = engine.docker("image", "inspect", "-f", "{{json .Config.Labels}}", pushed).stdout
    assert json.loads(labels) == {"pushed": "yes"}
    engine.docker("rmi", pushed)


def test_build_service_with_legacy_builder(engine: Engine, project: ComposeProject) -> None:
    app = project.dir / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM busybox:latest\nCOPY hello.txt /hello.txt\n"
                                    "RUN echo built >> /hello.txt\n")
    (app / "hello.txt").write_text("copied\n")
    project.write("""
version: "3.8"
services:
  app:
    build: ./app
    command: cat /hello.txt
""")
    result = project("up", "-d")
    assert f"Successfully tagged {project.name}_app:latest" in result.stdout
    wait_for(lambda: project.log_lines("app") == ["copied", "built"])


def test_build_cache_from_a_loaded_image(engine: Engine, project: ComposeProject) -> None:
    app = project.dir / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM busybox:latest\nRUN echo cached > /made\n"
                                    "CMD [\"cat\", \"/made\"]\n")
    engine.docker("build", "-t", "compose-cache:src", str(app), timeout=180)
    source = engine.docker("image", "inspect", "-f", "{{.Id}}", "compose-cache:src").stdout
    archive = project.dir / "src.tar"
    engine.docker("save", "-o", str(archive), "compose-cache:src")
    engine.docker("rmi", "compose-cache:src")
    engine.docker("builder", "prune", "-a", "-f")
    engine.docker("load", "-i", str(archive))
    project.write("""
version: "3.8"
services:
  app:
    build:
      context: ./app
      cache_from: ["compose-cache:src"]
    image: compose-cache:built
""")
    try:
        result = project("build")
        assert result.stdout.count("Using cache") == 2 and "Running in" not in result.stdout
        assert engine.docker("image", "inspect", "-f", "{{.Id}}",
                             "compose-cache:built").stdout == source
    finally:
        engine.docker("rmi", "compose-cache:src", "compose-cache:built", check=False)


def test_disconnect_created_container_keeps_it_off_the_network(engine: Engine,
                                                                busybox: str) -> None:
    """Compose disconnects a created container from its network and reconnects
    it with aliases before starting it (regression: 'is not connected')."""
    engine.docker("network", "create", "compose-dis")
    try:
        engine.docker("create", "--name", "compose-dis-c", "--network", "compose-dis",
                      busybox, "sleep", "300")
        engine.docker("network", "disconnect", "compose-dis", "compose-dis-c")
        engine.docker("start", "compose-dis-c")
        networks = engine.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                 "compose-dis-c").stdout
        assert "compose-dis" not in json.loads(networks)
        engine.docker("network", "connect", "--alias", "peer", "compose-dis",
                      "compose-dis-c")
        networks = json.loads(engine.docker(
            "inspect", "-f", "{{json .NetworkSettings.Networks}}", "compose-dis-c").stdout)
        assert "peer" in networks["compose-dis"]["Aliases"]
    finally:
        engine.docker("rm", "-f", "compose-dis-c", check=False)
        engine.docker("network", "rm", "compose-dis", check=False)


def test_ports_listed_only_while_running(engine: Engine, busybox: str) -> None:
    """`docker-compose ps` and `docker ps -a` show no ports for a container
    that is not running, as dockerd (regression: exposed ports stayed listed)."""
    port = free_port()
    engine.docker("create", "--name", "compose-ports", "-p", f"127.0.0.1:{port}:80",
                  "--expose", "81", busybox, "sleep", "300")
    try:
        def ports() -> dict:
            return json.loads(engine.docker(
                "inspect", "-f", "{{json .NetworkSettings.Ports}}", "compose-ports").stdout)
        listed = ["ps", "-a", "--filter", "name=compose-ports", "--format", "{{.Ports}}"]
        assert ports() == {}
        assert engine.docker(*listed).stdout.strip() == b""
        engine.docker("start", "compose-ports")
        assert ports() == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}],
                           "81/tcp": None}
        engine.docker("stop", "-t", "0", "compose-ports")
        assert ports() == {}
        assert engine.docker(*listed).stdout.strip() == b""
    finally:
        engine.docker("rm", "-f", "compose-ports", check=False)


def test_short_id_and_hostname_aliases_before_api_1_45(engine: Engine, busybox: str) -> None:
    """dockerd adds them to user-defined network aliases for clients older
    than API 1.45; Compose 1.29 pinned to 1.44 relies on it."""
    engine.docker("network", "create", "compose-alias")
    try:
        cid = engine.docker("create", "--name", "compose-alias-c", "--hostname", "h1",
                            "--network", "compose-alias", "--network-alias", "peer",
                            busybox, "sleep", "300").stdout.decode().strip()
        for version, expected in (("1.44", ["peer", cid[:12], "h1"]), ("1.50", ["peer"])):
            with docker.APIClient(base_url=engine.host, version=version) as api:
                networks = api.inspect_container(cid)["NetworkSettings"]["Networks"]
            assert networks["compose-alias"]["Aliases"] == expected
    finally:
        engine.docker("rm", "-f", "compose-alias-c", check=False)
        engine.docker("network", "rm", "compose-alias", check=False)


def test_config_file_two_networks_stop_start_and_resolver(engine: Engine,
                                                          project: ComposeProject) -> None:
    """The shape of a real stack: a mounted config file, services on two
    networks, `stop` then `start`, and lookups through 127.0.0.11 as an
    nginx `resolver 127.0.0.11` does."""
    (project.dir / "app.conf").write_text("upstream=web\n")
    project.write(f"""
version: "3.8"
services:
  web:
    image: busybox:latest
    command: {HTTPD}
    networks: [front, back]
  proxy:
    image: busybox:latest
    command: sleep 300
    volumes: ["./app.conf:/etc/app.conf:ro"]
    networks:
      front:
        aliases: [gateway]
  db:
    image: busybox:latest
    command: sleep 300
    networks: [back]
networks:
  front: {{}}
  back: {{}}
""")
    project("up", "-d")
    for cycle in ("up", "restarted"):
        states = project.ps_states()
        assert len(states) == 3 and all(" Up " in f"{s} " for s in states.values()), \
            (cycle, states)
        conf = project("exec", "-T", "proxy", "cat", "/etc/app.conf").stdout
        assert conf == "upstream=web\n"
        resolv = project("exec", "-T", "proxy", "cat", "/etc/resolv.conf").stdout
        assert "nameserver 127.0.0.11" in resolv and "ndots:0" in resolv
        for service, name in (("proxy", "web"), ("db", "web"), ("web", "gateway")):
            lookup = project("exec", "-T", service, "nslookup", name, "127.0.0.11",
                             check=False)
            assert "Address" in lookup.stdout.split("Name:")[-1], (cycle, service, lookup)
        missing = project("exec", "-T", "db", "nslookup", "proxy", "127.0.0.11", check=False)
        assert missing.returncode != 0, "db and proxy share no network"

        def served() -> bool:
            result = project("exec", "-T", "proxy", "sh", "-c", HTTP_GET, check=False)
            return result.stdout.endswith("hello\n")
        wait_for(served)
        web = f"{project.name}_web_1"
        networks = json.loads(engine.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                            web).stdout)
        assert sorted(networks) == [f"{project.name}_back", f"{project.name}_front"]
        if cycle == "up":
            project("stop", "-t", "1")
            stopped = json.loads(engine.docker(
                "inspect", "-f", "{{json .NetworkSettings.Networks}}", web).stdout)
            assert sorted(stopped) == sorted(networks)
            project("start")
