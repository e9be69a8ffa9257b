"""OCI Distribution HTTP client: endpoints (https, or http for loopback and
insecure registries, mirrors for Docker Hub, or containerd's hosts.toml
for any registry), per-registry TLS from a certs.d directory, and the
WWW-Authenticate challenge flow (anonymous, Basic, Bearer token)."""

from __future__ import annotations

import base64
import ipaddress
import re
import ssl
import tomllib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.common.engine_config import setting
from services.common.errors import Internal, NotFound, Unauthenticated
from services.common.relay import coalesced

DOCKER_HUB_HOST = "registry-1.docker.io"
DEFAULT_CERTS_DIR = "/etc/docker/certs.d"
TOKEN_CLIENT_ID = "docker"     # what token servers know Docker clients by
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @property
    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or "]" in host else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_insecure(host: str, insecure: list[str]) -> bool:
    if _is_loopback(host) or host in insecure:
        return True
    name = host.rsplit(":", 1)[0]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name in insecure
    for entry in insecure:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class ChallengeAuth(httpx.Auth):
    """Answers a registry's 401 challenge once, caching the bearer token."""

    def __init__(self, session: RegistrySession) -> None:
        self.session = session

    async def async_auth_flow(self, request: httpx.Request
                              ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self.session.authorization:
            request.headers["Authorization"] = self.session.authorization
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        creds = self.session.credentials
        if scheme == "basic":
            if not creds.username:
                return
            self.session.authorization = creds.basic
        elif scheme == "bearer":
            token_request = self.session.token_request(params)
            token_response = yield token_request
            if token_response.status_code != 200:
                return
            await token_response.aread()
            body = token_response.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                return
            self.session.authorization = f"Bearer {token}"
            self.session.refresh_token = body.get("refresh_token") or self.session.refresh_token
        else:
            return
        request.headers["Authorization"] = self.session.authorization
        yield request


@dataclass
class RegistrySession:
    """One registry host with one user's credentials and a set of scopes."""

    domain: str
    credentials: Credentials
    scopes: list[str]
    base_url: str
    client: httpx.AsyncClient
    authorization: str = ""
    # Login asks the token server for a refresh token (Docker's offline
    # token): given back to the client as its identity token.
    offline: bool = False
    refresh_token: str = ""

    def token_request(self, challenge: dict[str, str]) -> httpx.Request:
        params: list[tuple[str, str]] = []
        if challenge.get("service"):
            params.append(("service", challenge["service"]))
        scopes = self.scopes or ([challenge["scope"]] if challenge.get("scope") else [])
        params.extend(("scope", scope) for scope in scopes)
        headers = {}
        creds = self.credentials
        if creds.identity_token:
            return httpx.Request("POST", challenge["realm"], data={
                "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                "service": challenge.get("service", ""), "scope": " ".join(scopes),
                "client_id": TOKEN_CLIENT_ID})
        if creds.username:
            headers["Authorization"] = creds.basic
            if self.offline:
                params += [("offline_token", "true"), ("client_id", TOKEN_CLIENT_ID)]
        return httpx.Request("GET", challenge["realm"], params=params, headers=headers)

    def url(self, path: str) -> str:
        return f"{self.base_url}/v2/{path}"

    async def request(self, method: str, path_or_url: str, **kwargs) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        try:
            return await self.client.request(method, url, auth=ChallengeAuth(self), **kwargs)
        except httpx.HTTPError as exc:
            raise Internal(f"{method} {url}: {exc}") from exc

    async def stream(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A response whose body is read by the caller (and closed by it)."""
        request = self.client.build_request(method, self.url(path), **kwargs)
        try:
            return await self.client.send(request, auth=ChallengeAuth(self), stream=True)
        except httpx.HTTPError as exc:
            raise Internal(f"{method} {self.url(path)}: {exc}") from exc

    async def reachable(self) -> bool:
        try:
            await self.client.get(self.url(""), timeout=5)
        except httpx.HTTPError:
            return False
        return True

    async def ping(self) -> None:
        """GET /v2/ to learn the auth scheme; 401 after answering it fails."""
        response = await self.request("GET", "")
        if response.status_code == 401:
            raise Unauthenticated(f"login attempt to {self.url('')} failed with status: "
                                  f"401 Unauthorized")
        if response.status_code >= 400:
            raise Internal(f"login attempt to {self.url('')} failed with status: "
                           f"{response.status_code} {response.reason_phrase}")


def error_text(response: httpx.Response) -> str:
    """`code: message` of a registry's JSON error body, or the HTTP status."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        errors = []
    if errors:
        first = errors[0]
        return f"{str(first.get('code', '')).lower().replace('_', ' ')}: {first.get('message', '')}"
    return f"{response.status_code} {response.reason_phrase}"


def raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code == 401:
        raise Unauthenticated(f"{what}: unauthorized: {error_text(response)}")
    if response.status_code == 404:
        raise NotFound(f"{what}: {error_text(response)}")
    if response.status_code >= 400:
        raise Internal(f"{what}: {error_text(response)}")


def tls_context(directory: Path, verify: bool) -> ssl.SSLContext:
    """Docker's certs.d/<host> rules: every *.crt is a CA trusted beside the
    system's, every *.cert with the *.key of the same name a client
    certificate."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        for ca in sorted(directory.glob("*.crt")):
            context.load_verify_locations(cafile=ca)
        for cert in sorted(directory.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.exists():
                raise Internal(f"missing key {key.name} for client certificate {cert.name}. "
                               "CA certificates must use the extension .crt")
            context.load_cert_chain(cert, key)
        for key in sorted(directory.glob("*.key")):
            if not key.with_suffix(".cert").exists():
                raise Internal(f"missing client certificate {key.with_suffix('.cert').name} "
                               f"for key {key.name}")
    except (OSError, ssl.SSLError) as exc:
        raise Internal(f"invalid certificates in {directory}: {exc}") from exc
    return context


def hosts_toml_urls(path: Path, domain: str) -> list[str]:
    """containerd's per-registry hosts.toml: the `[host."URL"]` entries that
    can pull, in file order, then `server` (the registry itself when
    unset); [] without a file. A URL's /v2 suffix is implied, as there."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Internal(f"invalid registry host config {path}: {exc}") from exc
    upstream = f"https://{DOCKER_HUB_HOST if domain == 'docker.io' else domain}"
    hosts = document.get("host") or {}
    if not isinstance(hosts, dict):
        raise Internal(f"invalid registry host config {path}: host must be a table")
    urls = [url for url, options in hosts.items()
            if "pull" in (options or {}).get("capabilities", ["pull", "resolve", "push"])]
    urls.append(str(document.get("server") or upstream))
    return list(dict.fromkeys(url.rstrip("/").removesuffix("/v2") for url in urls))


class Registries:
    """Endpoints per registry host, from the engine config (daemon.json keys,
    and `certs-dir`: where certs.d lives, /etc/docker/certs.d by default)."""

    def __init__(self, engine: dict) -> None:
        self.configure(engine)
        self.certs_dir = Path(engine.get("certs-dir") or DEFAULT_CERTS_DIR)
        self._options = {"timeout": httpx.Timeout(60, connect=10), "follow_redirects": True,
                         "limits": httpx.Limits(max_connections=32)}
        self.client = httpx.AsyncClient(**self._options)
        # https to insecure registries: self-signed certificates are accepted.
        self.unverified_client = httpx.AsyncClient(verify=False, **self._options)
        # Clients of registries with a certs.d directory, by what they were made from.
        self._tls_clients: dict[tuple[str, bool, int], httpx.AsyncClient] = {}

    def configure(self, engine: dict) -> None:
        """The settings a reload changes (insecure registries, Docker Hub
        mirrors), for the sessions opened afterwards."""
        self.insecure: list[str] = list(setting(engine, "insecure-registries"))
        self.mirrors: list[str] = [m.rstrip("/") for m in setting(engine, "registry-mirrors")]

    def base_urls(self, domain: str) -> list[str]:
        """Endpoints to try in order: those of the registry's hosts.toml when
        it has one; else as dockerd does, mirrors before Docker Hub, https
        (any certificate) then http for insecure registries, which loopback
        ones always are."""
        from_hosts_file = hosts_toml_urls(self.certs_dir / domain / "hosts.toml", domain)
        if from_hosts_file:
            return from_hosts_file
        if domain == "docker.io":
            return [*self.mirrors, f"https://{DOCKER_HUB_HOST}"]
        if _is_insecure(domain, self.insecure):
            return [f"https://{domain}", f"http://{domain}"]
        return [f"https://{domain}"]

    def session(self, domain: str, credentials: Credentials, scopes: list[str],
                base_url: str) -> RegistrySession:
        unverified = base_url.startswith("https://") and _is_insecure(domain, self.insecure)
        return RegistrySession(domain=domain, credentials=credentials, scopes=scopes,
                               base_url=base_url, client=self._client(domain, not unverified))

    def _client(self, domain: str, verify: bool) -> httpx.AsyncClient:
        """The client for `domain`: with its certs.d directory's CAs and client
        certificates when it has one (read again when it changes, as Docker
        reads it for every request)."""
        directory = self.certs_dir / domain
        try:
            changed = directory.stat().st_mtime_ns
        except OSError:
            return self.client if verify else self.unverified_client
        key = (domain, verify, changed)
        if key not in self._tls_clients:
            self._tls_clients[key] = httpx.AsyncClient(verify=tls_context(directory, verify),
                                                       **self._options)
        return self._tls_clients[key]

    async def open(self, domain: str, credentials: Credentials,
                   scopes: list[str]) -> RegistrySession:
        """A session on the first endpoint that answers at all (any status)."""
        urls = self.base_urls(domain)
        for base_url in urls[:-1]:
            session = self.session(domain, credentials, scopes, base_url)
            if await session.reachable():
                return session
        return self.session(domain, credentials, scopes, urls[-1])

    async def close(self) -> None:
        for client in (self.client, self.unverified_client, *self._tls_clients.values()):
            await client.aclose()


async def iter_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body in pieces of about 1 MiB, joined once from what the
    connection reads (httpx's own chunking copies every byte several times)."""
    try:
        async for piece in coalesced(response.aiter_bytes()):
            yield piece
    except httpx.HTTPError as exc:
        raise Internal(f"error reading blob: {exc}") from exc
