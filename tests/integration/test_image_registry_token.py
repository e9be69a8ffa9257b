"""Bearer token auth: a registry with `auth: token` and a tiny token server
(aiohttp) that signs RS256 JWTs with a throwaway certificate."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.support.engine import Engine
from tests.support.image_registry import configured_registry, self_signed
from tests.support.registry import free_port

USER, PASSWORD = "tokenuser", "tokenpass"
SERVICE, ISSUER = "berth-test-registry", "berth-test-issuer"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    root: Path
    port: int = field(default_factory=free_port)
    issued: list[str] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)
    refreshed: int = 0

    def __post_init__(self) -> None:
        self.key, self.cert = self_signed(self.root, "berth-token")
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "der"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        signing_input = f"{b64url(json.dumps(header).encode())}." \
                        f"{b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return f"{signing_input}.{b64url(signature)}"

    def access_token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        self.issued.append(" ".join(scopes))
        return self.sign({"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300,
                          "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                          "access": access})

    async def token(self, request: web.Request) -> web.Response:
        """GET with Basic credentials; `offline_token=true` adds a refresh token."""
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"details": "bad credentials"}, status=401)
        body = {"token": self.access_token(request.query.getall("scope", [])),
                "expires_in": 300}
        if request.query.get("offline_token") == "true":
            body["refresh_token"] = uuid.uuid4().hex
            self.refresh_tokens.add(body["refresh_token"])
        return web.json_response(body)

    async def refresh(self, request: web.Request) -> web.Response:
        """POST grant_type=refresh_token (OAuth2), as Docker sends identity tokens."""
        form = await request.post()
        if form.get("grant_type") != "refresh_token" or \
                form.get("refresh_token") not in self.refresh_tokens:
            return web.json_response({"details": "bad refresh token"}, status=401)
        self.refreshed += 1
        scopes = str(form.get("scope", "")).split()
        return web.json_response({"access_token": self.access_token(scopes), "expires_in": 300})


@contextlib.contextmanager
def serving(app: web.Application, port: int) -> Iterator[None]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def token_registry(server: TokenServer) -> contextlib.AbstractContextManager[str]:
    """docker-registry trusting `server`'s tokens; yields its address."""
    return configured_registry(f"""auth:
  token:
    realm: http://127.0.0.1:{server.port}/token
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {server.cert}
""")


@pytest.fixture(scope="module")
def token_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TokenServer, str]]:
    server = TokenServer(tmp_path_factory.mktemp("token"))
    app = web.Application()
    app.router.add_get("/token", server.token)
    app.router.add_post("/token", server.refresh)
    with serving(app, server.port), token_registry(server) as address:
        yield server, address


def test_bearer_token_push_and_pull(engine: Engine, busybox: str,
                                    token_setup: tuple[TokenServer, str]) -> None:
    server, address = token_setup
    target = f"{address}/secure/app:1"
    engine.docker("tag", busybox, target)
    engine.docker("login", "-u", USER, "--password-stdin", address,
                  input=PASSWORD.encode() + b"\n")
    assert b"1: digest: sha256:" in engine.docker("push", target).stdout
    assert any("secure/app:pull,push" in scope for scope in server.issued)
    engine.docker("rmi", target)
    out = engine.docker("pull", target).stdout.decode()
    assert "Status: Downloaded newer image" in out
    engine.docker("logout", address)
    engine.docker("rmi", target)
    wrong = engine.docker("login", "-u", USER, "--password-stdin", address,
                          input=b"nope\n", check=False)
    assert wrong.returncode != 0


def test_login_keeps_an_identity_token_instead_of_the_password(
        engine: Engine, busybox: str, token_setup: tuple[TokenServer, str]) -> None:
    server, address = token_setup
    engine.docker("login", "-u", USER, "--password-stdin", address,
                  input=PASSWORD.encode() + b"\n")
    config = json.loads((engine.root / "docker-config" / "config.json").read_text())
    stored = config["auths"][address]
    assert stored["identitytoken"] in server.refresh_tokens
    assert PASSWORD not in base64.b64decode(stored.get("auth", "")).decode()
    target = f"{address}/identity/app:1"
    engine.docker("tag", busybox, target)
    before = server.refreshed
    assert b"1: digest: sha256:" in engine.docker("push", target).stdout
    assert server.refreshed > before, "the push authenticated with the refresh token"
    engine.docker("logout", address)
    engine.docker("rmi", target)
    # Credentials sent with the request (no identity token) still get tokens.
    engine.client().images.pull(target, auth_config={"username": USER, "password": PASSWORD})
    engine.docker("rmi", target)
