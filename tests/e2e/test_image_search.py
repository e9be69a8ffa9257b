"""`docker search` (issue 14 item 13): a registry's v1 search where it has
one, Docker's error where it has none (Debian's docker-registry)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import docker
import pytest

from tests.support.engine import Engine
from tests.support.registry import Registry

RESULTS = [
    {"name": "tools/busybox", "description": "small", "star_count": 3, "is_official": False},
    {"name": "busybox", "description": "official", "star_count": 40, "is_official": True},
]


class V1Search(BaseHTTPRequestHandler):
    """A registry index that serves only the v1 search API."""

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path != "/v1/search":
            self.send_error(404)
            return
        query = parse_qs(url.query)
        self.server.queries.append(query)  # type: ignore[attr-defined]
        found = [r for r in RESULTS if query["q"][0] in r["name"]][:int(query["n"][0])]
        body = json.dumps({"query": query["q"][0], "results": found}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def index() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), V1Search)
    server.queries = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_search_of_a_registry_with_v1_search(engine: Engine,
                                             index: ThreadingHTTPServer) -> None:
    host = f"127.0.0.1:{index.server_address[1]}"
    out = engine.docker("search", "--format", "{{.Name}} {{.StarCount}} {{.IsOfficial}}",
                        f"{host}/busybox").stdout.decode().splitlines()
    assert out == ["tools/busybox 3 ", "busybox 40 [OK]"]
    assert index.queries[-1] == {"q": ["busybox"], "n": ["25"]}  # type: ignore[attr-defined]
    official = engine.docker("search", "--limit", "5", "--filter", "is-official=true",
                             "--format", "{{.Name}}", f"{host}/busybox").stdout
    assert official == b"busybox\n"
    assert index.queries[-1]["n"] == ["5"]  # type: ignore[attr-defined]
    starred = engine.docker("search", "--filter", "stars=10", "--format", "{{.Name}}",
                            f"{host}/busybox").stdout
    assert starred == b"busybox\n"
    client = engine.client()
    assert [r["name"] for r in client.api.search(f"{host}/tools")] == ["tools/busybox"]
    with pytest.raises(docker.errors.APIError) as bad:
        client.api.search(f"{host}/busybox", limit=101)
    assert bad.value.explanation == "limit 101 is outside the range of [1, 100]"


def test_search_of_a_registry_without_v1_search(engine: Engine, registry: Registry) -> None:
    result = engine.docker("search", f"{registry.address}/busybox", check=False)
    assert result.returncode != 0
    assert b"unexpected status code 404" in result.stderr
