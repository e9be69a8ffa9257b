"""A three-tier Compose stack of real software on berth: nginx in front, a
Python app built from a Debian image, redis behind it (issue 14).

busybox hides what real software relies on: nginx resolves upstreams itself
through `resolver 127.0.0.11` and caches nothing past `valid=`, a config is
mounted as a single file, and every service sits on its own networks.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.compose import COMPOSE, ComposeProject, compose_project
from tests.support.debian_image import import_image
from tests.support.engine import Engine
from tests.support.polling import wait_for
from tests.support.registry import free_port

pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed")

IMAGE = "berth-test/debian-stack:bookworm"

NGINX_CONF = """\
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;

events {
    worker_connections 64;
}

http {
    access_log off;
    resolver 127.0.0.11 valid=1s ipv6=off;
    resolver_timeout 2s;

    server {
        listen 80;
        # Upstreams through variables: nginx resolves them at request time
        # with the resolver above instead of once at startup.
        location / {
            set $app http://app:8000;
            proxy_pass $app;
        }
        location /redis {
            set $redis http://redis:6379;
            proxy_pass $redis;
        }
    }
}
"""

APP = """\
import http.server
import signal
import socket
import sys


def incr(key: str) -> int:
    command = f"*2\\r\\n$4\\r\\nINCR\\r\\n${len(key)}\\r\\n{key}\\r\\n"
    with socket.create_connection(("redis", 6379), timeout=5) as conn:
        conn.sendall(command.encode())
        reply = conn.makefile("rb").readline()
    if not reply.startswith(b":"):
        raise RuntimeError(f"redis answered {reply!r}")
    return int(reply[1:])


class Hits(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hits={incr('hits')}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
http.server.ThreadingHTTPServer(("", 8000), Hits).serve_forever()
"""

DOCKERFILE = f"""\
FROM {IMAGE}
COPY app.py /srv/app.py
USER www-data
EXPOSE 8000
CMD ["python3", "-u", "/srv/app.py"]
"""

STACK = """\
version: "3.8"
services:
  nginx:
    image: {image}
    command: ["nginx", "-g", "daemon off;"]
    volumes: ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    ports: ["127.0.0.1:{port}:80"]
    networks: [front]
    depends_on: [app]
  app:
    build: ./app
    networks: [front, back]
    depends_on: [redis]
  redis:
    image: {image}
    command: ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no",
              "--dir", "/data", "--appendonly", "yes"]
    volumes: ["redisdata:/data"]
    networks: [back]
networks:
  front: {{}}
  back: {{}}
volumes:
  redisdata: {{}}
"""


@pytest.fixture(scope="module")
def debian_image(engine: Engine, debian_stack_rootfs: Path) -> str:
    return import_image(engine, debian_stack_rootfs, IMAGE)


@pytest.fixture
def stack(engine: Engine, debian_image: str, tmp_path: Path) -> Iterator[ComposeProject]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "app.py").write_text(APP)
    (tmp_path / "nginx.conf").write_text(NGINX_CONF)
    with compose_project(engine, tmp_path, "stack") as project:
        project.write(STACK.format(image=debian_image, port=free_port()))
        yield project


def _get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def _hits(port: int) -> int:
    """One request through nginx to the app; the counter redis returned."""
    status, body = _get(port)
    assert status == 200 and body.startswith("hits="), (status, body)
    return int(body.removeprefix("hits="))


def _serving(port: int) -> None:
    wait_for(lambda: _get(port)[0] == 200, timeout=30, message="the stack to serve")


def _published_port(stack: ComposeProject) -> int:
    address = stack("port", "nginx", "80").stdout.strip()
    return int(address.rpartition(":")[2])


def _address(engine: Engine, container: str, network: str) -> str:
    networks = json.loads(engine.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                        container).stdout)
    return networks[network]["IPAddress"]


def _all_up(stack: ComposeProject) -> bool:
    states = stack.ps_states()
    return len(states) == 3 and all(" Up " in f"{line} " for line in states.values())


def test_nginx_app_redis_stack(engine: Engine, stack: ComposeProject) -> None:
    stack("up", "-d")
    assert _all_up(stack), stack.ps_states()
    port = _published_port(stack)
    _serving(port)
    first = _hits(port)
    assert _hits(port) == first + 1

    mounted = stack("exec", "-T", "nginx", "cat", "/etc/nginx/nginx.conf").stdout
    assert mounted == NGINX_CONF
    write = stack("exec", "-T", "nginx", "sh", "-c", "echo >> /etc/nginx/nginx.conf",
                  check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    for service in ("nginx", "app", "redis"):
        resolv = stack("exec", "-T", service, "cat", "/etc/resolv.conf").stdout.splitlines()
        assert "nameserver 127.0.0.11" in resolv, (service, resolv)
        assert any(line.startswith("options") and "ndots:0" in line.split()
                   for line in resolv), (service, resolv)

    # app is on both networks: its hostname is in its /etc/hosts at both
    # addresses, and the embedded DNS answers a name it shares with app on
    # two networks from one of them, the first by name (back), as dockerd.
    app = f"{stack.name}_app_1"
    front, back = f"{stack.name}_front", f"{stack.name}_back"
    hostname = stack("exec", "-T", "app", "hostname").stdout.strip()
    hosts = stack("exec", "-T", "app", "cat", "/etc/hosts").stdout.splitlines()
    assert {f"{_address(engine, app, network)}\t{hostname}"
            for network in (front, back)} <= set(hosts), hosts
    lookup = stack("exec", "-T", "app", "getent", "hosts", "app").stdout.splitlines()
    assert [line.split()[0] for line in lookup] == [_address(engine, app, back)], lookup

    # redis is on `back` only: nginx's own resolver cannot find it.
    assert _get(port, "/redis")[0] == 502
    assert "redis could not be resolved" in "\n".join(stack.log_lines("nginx"))

    # The app comes back on another address while nginx keeps running; only
    # a lookup through 127.0.0.11 after `valid=1s` finds it.
    old_address = _address(engine, app, front)
    stack("stop", "-t", "5", "app")
    squatter = engine.docker("run", "-d", "--network", front, IMAGE, "sleep", "300"
                             ).stdout.decode().strip()
    try:
        stack("start", "app")
        assert _address(engine, app, front) != old_address
        _serving(port)
        assert _hits(port) > first + 1
    finally:
        engine.docker("rm", "-f", squatter)

    # stop/start of the whole stack: every service on its networks again,
    # redis's data kept on its volume.
    before = _hits(port)
    stack("stop", "-t", "5")
    assert all("Exit" in line for line in stack.ps_states().values()), stack.ps_states()
    stack("start")
    assert _all_up(stack), stack.ps_states()
    _serving(port)
    assert _hits(port) > before
    assert _get(port, "/redis")[0] == 502

    stack("down", "-v", "-t", "5", "--rmi", "local")
    assert stack.containers() == []
    networks = engine.docker("network", "ls", "--format", "{{.Name}}").stdout.decode().split()
    assert not [name for name in networks if name.startswith(f"{stack.name}_")]
    volumes = engine.docker("volume", "ls", "-q").stdout.decode().split()
    assert f"{stack.name}_redisdata" not in volumes
    images = engine.docker("images", "--format", "{{.Repository}}").stdout.decode().split()
    assert f"{stack.name}_app" not in images
