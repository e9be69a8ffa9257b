"""Pull, push, login and distribution inspect against OCI registries, with
Docker's progress messages."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.common.engine_config import setting
from services.common.errors import Internal, InvalidArgument, NotFound
from services.image import metrics, reference
from services.image.images import Images
from services.image.ingest import LAYER_GZIP, LAYER_TAR, LAYER_ZSTD, Ingest, LayerSource
from services.image.layers import chain_ids, decompressed
from services.image.platforms import Platform
from services.image.progress import Message, short
from services.image.reference import ImageRef
from services.image.registry import (
    Credentials,
    Registries,
    RegistrySession,
    error_text,
    iter_body,
    raise_for,
)
from services.image.store import LayerBlob

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX))
PROGRESS_INTERVAL = 0.1
CHUNK_SIZE = 16 << 20  # blobs above this go up in PATCH chunks


@dataclass
class Manifest:
    body: dict[str, Any]
    digest: str
    media_type: str
    size: int
    platforms: list[dict[str, Any]] = field(default_factory=list)
    index_digest: str = ""  # the index it was picked from: what the tag points at

    @property
    def reference_digest(self) -> str:
        return self.index_digest or self.digest


def credentials_of(auth: Any) -> Credentials:
    return Credentials(username=auth.username, password=auth.password,
                       identity_token=auth.identity_token, registry_token=auth.registry_token)


def pull_reference(text: str, tag: str) -> ImageRef:
    """fromImage + tag as moby reads them: the tag may be a digest."""
    if tag.startswith("sha256:"):
        return reference.parse(f"{text}@{tag}")
    if tag:
        return reference.parse_repository(text, tag)
    return reference.parse(text)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Distribution:
    def __init__(self, images: Images, ingest: Ingest, registries: Registries,
                 engine: dict | None = None) -> None:
        self.images = images
        self.ingest = ingest
        self.registries = registries
        self.configure(engine or {})

    def configure(self, engine: dict) -> None:
        """How many layers one pull downloads and one push uploads at a time
        (dockerd's max-concurrent-downloads and -uploads), for the transfers
        that start afterwards."""
        self.max_downloads: int = setting(engine, "max-concurrent-downloads")
        self.max_uploads: int = setting(engine, "max-concurrent-uploads")

    # Sessions.
    async def _session(self, ref: ImageRef, creds: Credentials,
                       actions: str = "pull") -> RegistrySession:
        return await self.registries.open(ref.domain, creds,
                                          [f"repository:{ref.path}:{actions}"])

    async def login(self, server: str, creds: Credentials) -> tuple[str, str]:
        """Check the credentials; the status and, when the registry's token
        server gives one, the identity (refresh) token the client keeps
        instead of the password."""
        domain = server.removeprefix("https://").removeprefix("http://").split("/")[0]
        if domain in ("", "index.docker.io", "registry-1.docker.io"):
            domain = "docker.io"
        if not reference.is_registry_domain(domain):
            # It also names the registry's certs.d directory: never a path.
            raise InvalidArgument(f"invalid registry server address {server!r}")
        session = await self.registries.open(domain, creds, [])
        session.offline = True
        await session.ping()
        return "Login Succeeded", session.refresh_token

    async def download(self, url: str, path: Path) -> None:
        """Fetch `docker import URL`'s archive to `path`."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InvalidArgument(f"invalid import source {url!r}: {exc}") from exc
        if parsed.scheme not in ("http", "https"):
            raise InvalidArgument(f"invalid import source {url!r}: not an http(s) URL")
        if not parsed.host or not 0 < (parsed.port or 80) < 65536:
            raise InvalidArgument(f"invalid import source {url!r}: no host, or a port "
                                  f"out of range")
        try:
            async with self.registries.client.stream("GET", parsed) as response:
                if response.status_code >= 400:
                    raise InvalidArgument(f"error downloading {url}: "
                                          f"{response.status_code} {response.reason_phrase}")
                with path.open("wb") as file:
                    async for chunk in iter_body(response):
                        await asyncio.to_thread(file.write, chunk)
        except httpx.HTTPError as exc:
            raise Internal(f"error downloading {url}: {exc}") from exc

    # Manifests.
    async def fetch_manifest(self, session: RegistrySession, ref: ImageRef,
                             platform: Platform | None) -> Manifest:
        """The manifest for `ref`; an index is resolved to `platform`'s entry
        unless platform is None."""
        manifest = await self._get_manifest(session, ref, ref.digest or ref.tag)
        if platform is None or manifest.media_type not in INDEXES:
            return manifest
        entries = manifest.body.get("manifests") or []
        chosen = next((e for e in entries if platform.matches(e)), None)
        if chosen is None:
            raise NotFound(f"no matching manifest for {platform} in the manifest list entries")
        child = await self._get_manifest(session, ref, chosen["digest"])
        child.platforms = [chosen.get("platform") or {}]
        child.index_digest = manifest.digest
        return child

    async def _get_manifest(self, session: RegistrySession, ref: ImageRef,
                            tag_or_digest: str) -> Manifest:
        response = await session.request("GET", f"{ref.path}/manifests/{tag_or_digest}",
                                         headers={"Accept": ACCEPT})
        if response.status_code == 404:
            raise NotFound(f"manifest for {ref.familiar} not found: "
                           f"{error_text(response)}")
        raise_for(response, f'Head "{response.request.url}"')
        body = response.content
        digest = _sha256(body)
        if tag_or_digest.startswith("sha256:") and digest != tag_or_digest:
            raise InvalidArgument(f"manifest verification failed for digest {tag_or_digest}")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise Internal(f"invalid manifest for {ref.familiar}: {exc}") from exc
        media_type = data.get("mediaType") or response.headers.get("Content-Type", "")
        if media_type not in (DOCKER_MANIFEST, OCI_MANIFEST, *INDEXES):
            raise Internal(f"unsupported manifest media type {media_type!r}")
        return Manifest(body=data, digest=digest, media_type=media_type, size=len(body))

    async def inspect(self, name: str, creds: Credentials) -> Manifest:
        ref = reference.parse(name)
        session = await self._session(ref, creds)
        manifest = await self.fetch_manifest(session, ref, None)
        if manifest.media_type in INDEXES:
            manifest.platforms = [e.get("platform") or {}
                                  for e in manifest.body.get("manifests") or []]
        else:
            config = await self._small_blob(session, ref, manifest.body["config"]["digest"])
            data = json.loads(config)
            manifest.platforms = [{"architecture": data.get("architecture", ""),
                                   "os": data.get("os", ""),
                                   **({"variant": data["variant"]} if data.get("variant")
                                      else {})}]
        return manifest

    async def _small_blob(self, session: RegistrySession, ref: ImageRef, digest: str) -> bytes:
        response = await session.request("GET", f"{ref.path}/blobs/{digest}")
        raise_for(response, f"fetching blob {digest}")
        if _sha256(response.content) != digest:
            raise InvalidArgument(f"blob verification failed for digest {digest}")
        return response.content

    # Pull.
    async def pull(self, text: str, tag: str, platform_text: str, creds: Credentials,
                   all_tags: bool = False) -> AsyncIterator[Message]:
        platform = Platform.parse(platform_text)
        if not all_tags:
            ref = pull_reference(text, tag)
            session = await self._session(ref, creds)
            outcome: dict[str, bool] = {}
            async for message in self._pull_one(session, ref, platform, bool(platform_text),
                                                outcome):
                yield message
            state = "Downloaded newer image" if outcome["new"] else "Image is up to date"
            yield Message(f"Status: {state} for {ref.familiar}")
            return
        repo = reference.parse(text, default_tag=False)
        if repo.tag or repo.digest or tag:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        session = await self._session(repo, creds)
        newer = False
        for name in await self._tags(session, repo):
            outcome = {}
            async for message in self._pull_one(session, repo.with_tag(name), platform,
                                                bool(platform_text), outcome):
                yield message
            newer = newer or outcome["new"]
        state = "Downloaded newer image" if newer else "Image is up to date"
        yield Message(f"Status: {state} for {repo.familiar_name}")

    async def _tags(self, session: RegistrySession, repo: ImageRef) -> list[str]:
        response = await session.request("GET", f"{repo.path}/tags/list")
        raise_for(response, f"listing tags of {repo.familiar_name}")
        return sorted((response.json() or {}).get("tags") or [])

    async def _pull_one(self, session: RegistrySession, ref: ImageRef, platform: Platform,
                        platform_given: bool, outcome: dict[str, bool]
                        ) -> AsyncIterator[Message]:
        """Pull one tag or digest; outcome["new"] says whether it changed."""
        started = time.monotonic()
        manifest = await self.fetch_manifest(session, ref, platform)
        config_digest = manifest.body["config"]["digest"]
        config_bytes = await self._small_blob(session, ref, config_digest)
        config = json.loads(config_bytes)
        if platform_given and not platform.matches({"platform": config}):
            raise NotFound(f"image with reference {ref.familiar} was found but does not "
                           f"provide the specified platform ({platform})")
        yield Message(f"Pulling from {ref.path}", id=ref.tag or ref.digest)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layers = manifest.body.get("layers") or []
        if len(diff_ids) != len(layers):
            raise Internal("manifest and image config disagree on the number of layers")
        chains = chain_ids(diff_ids)
        with self.ingest.adding(*chains, config_digest, *(layer["digest"] for layer in layers)):
            messages: asyncio.Queue[Message] = asyncio.Queue()
            work = self._pull_layers(session, ref, layers, diff_ids, chains, messages.put)
            async for message in _relay(work, messages):
                yield message
            image_id = self.ingest.register(config_bytes)
        previous = self.images.store.resolve_ref(str(ref))
        if ref.tag:
            self.images.set_reference(ref, image_id)
        self.images.set_reference(ref.with_digest(manifest.reference_digest), image_id)
        self.images.events.publish("pull", ref.familiar, {"name": ref.familiar})
        metrics.PULL_SECONDS.observe(time.monotonic() - started)
        outcome["new"] = previous != image_id
        yield Message(f"Digest: {manifest.reference_digest}")

    async def _pull_layers(self, session: RegistrySession, ref: ImageRef,
                           layers: list[dict[str, Any]], diff_ids: list[str],
                           chains: list[str], emit: Callable[[Message], Awaitable]) -> None:
        needed = [i for i, chain in enumerate(chains) if self.images.store.layer(chain) is None]
        for i, layer in enumerate(layers):
            await emit(Message("Already exists" if i not in needed else "Pulling fs layer",
                               id=short(layer["digest"])))
        slots = asyncio.Semaphore(self.max_downloads)
        for position, i in enumerate(needed):
            if position >= self.max_downloads:
                await emit(Message("Waiting", id=short(layers[i]["digest"])))
        # Each layer is unpacked as soon as it is downloaded (layer dirs do not
        # depend on each other); "Pull complete" still comes in layer order.
        completed = {i: asyncio.Event() for i in needed}

        async def fetch(position: int, i: int) -> None:
            layer = layers[i]
            digest = layer["digest"]
            await self._download(session, ref, layer, slots, emit)
            await emit(Message("Extracting", id=short(digest), current=0,
                               total=layer.get("size", 0)))
            media = _layer_media_type(layer.get("mediaType", ""))
            source = LayerSource(diff_id=diff_ids[i], media_type=media, blob_digest=digest)
            await self.ingest.add_layer(source, chains[i], chains[i - 1] if i else "")
            self.images.store.add_blob_source(digest, ref.domain, ref.path)
            if position:
                await completed[needed[position - 1]].wait()
            await emit(Message("Pull complete", id=short(digest)))
            completed[i].set()

        tasks = [asyncio.create_task(fetch(position, i)) for position, i in enumerate(needed)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _download(self, session: RegistrySession, ref: ImageRef, layer: dict[str, Any],
                        slots: asyncio.Semaphore, emit: Callable[[Message], Awaitable]) -> None:
        digest = layer["digest"]
        if self.images.content.exists(digest):
            await emit(Message("Download complete", id=short(digest)))
            return
        async with slots:
            response = await session.stream("GET", f"{ref.path}/blobs/{digest}")
            try:
                raise_for(response, f"fetching blob {digest}")
                total = int(response.headers.get("Content-Length") or layer.get("size") or 0)
                last = 0.0
                with self.images.content.writer() as blob:
                    async for chunk in iter_body(response):
                        await asyncio.to_thread(blob.write, chunk)  # hash + write off the loop
                        metrics.PULLED_BYTES.inc(len(chunk))
                        if time.monotonic() - last > PROGRESS_INTERVAL:
                            last = time.monotonic()
                            await emit(Message("Downloading", id=short(digest),
                                               current=blob.size, total=total))
                    await emit(Message("Verifying Checksum", id=short(digest)))
                    if blob.digest != digest:
                        raise InvalidArgument(
                            f"filesystem layer verification failed for digest {digest}")
            finally:
                await response.aclose()
        await emit(Message("Download complete", id=short(digest)))

    # Push.
    async def push(self, name: str, tag: str, creds: Credentials) -> AsyncIterator[Message]:
        ref = reference.parse(name, default_tag=False)
        if ref.digest:
            raise InvalidArgument("cannot push a digest reference")
        targets = self._push_targets(ref, tag)
        session = await self._session(ref, creds, "pull,push")
        yield Message(f"The push refers to repository [{ref.name}]")
        for target, image_id in targets:
            messages: asyncio.Queue[Message] = asyncio.Queue()
            result: dict[str, Any] = {}
            work = self._push_image(session, target, image_id, messages.put, result)
            async for message in _relay(work, messages):
                yield message
            digest, size = result["digest"], result["size"]
            self.images.set_reference(target.with_digest(digest), image_id)
            self.images.events.publish("push", target.familiar, {"name": target.familiar})
            yield Message(f"{target.tag}: digest: {digest} size: {size}")
            yield Message(aux={"Tag": target.tag, "Digest": digest, "Size": size})

    def _push_targets(self, ref: ImageRef, tag: str) -> list[tuple[ImageRef, str]]:
        if tag or ref.tag:
            target = ref.with_tag(tag or ref.tag)
            image_id = self.images.store.resolve_ref(str(target))
            if image_id is None:
                raise NotFound(f"tag does not exist: {target.familiar}")
            return [(target, image_id)]
        targets = []
        for image_id, refs in self.images.store.all_refs().items():
            for text in refs:
                other = reference.parse(text)
                if other.name == ref.name and other.tag:
                    targets.append((other, image_id))
        if not targets:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
        return sorted(targets, key=lambda t: t[0].tag)

    async def _push_image(self, session: RegistrySession, ref: ImageRef, image_id: str,
                          emit: Callable[[Message], Awaitable], result: dict[str, Any]) -> None:
        diff_ids = self.images.record_diff_ids(image_id)
        for diff_id in reversed(diff_ids):
            await emit(Message("Preparing", id=short(diff_id)))
        slots = asyncio.Semaphore(self.max_uploads)

        async def push_layer(diff_id: str) -> LayerBlob:
            async with slots:
                known = self.images.store.layer_blobs(diff_id)
                blob = await asyncio.to_thread(self._compressed_blob, diff_id, known)
                try:
                    self.images.store.add_layer_blob(blob)
                    await self._upload_blob(session, ref, blob.digest, blob.size, emit,
                                            progress_id=short(diff_id))
                finally:
                    self.images.unpin(blob.digest)
                return blob

        blobs = await asyncio.gather(*(push_layer(d) for d in reversed(diff_ids)))
        config_bytes = self.images.content.read(image_id)
        await self._upload_blob(session, ref, image_id, len(config_bytes), None)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config_bytes),
                       "digest": image_id},
            "layers": [{"mediaType": b.media_type, "size": b.size, "digest": b.digest}
                       for b in reversed(blobs)],
        }, indent=3).encode()
        response = await session.request(
            "PUT", f"{ref.path}/manifests/{ref.tag}", content=manifest,
            headers={"Content-Type": DOCKER_MANIFEST})
        raise_for(response, f"pushing manifest for {ref.familiar}")
        result["digest"] = response.headers.get("Docker-Content-Digest") or _sha256(manifest)
        result["size"] = len(manifest)

    def _compressed_blob(self, diff_id: str, blobs: list[LayerBlob]) -> LayerBlob:
        """A gzip blob of the layer among `blobs`, or made from one of them;
        pinned for the caller to unpin (runs in a thread)."""
        for blob in blobs:
            if blob.media_type == LAYER_GZIP and self.images.content.exists(blob.digest):
                self.images.pin(blob.digest)
                return blob
        source = next(b for b in blobs if self.images.content.exists(b.digest))
        with self.images.content.writer() as writer:
            with self.images.content.path(source.digest).open("rb") as raw, \
                    gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=1, mtime=0) as packed:
                shutil.copyfileobj(decompressed(raw), packed, 1 << 20)
            self.images.pin(writer.digest)
        return LayerBlob(diff_id, writer.digest, LAYER_GZIP, writer.size)

    async def _upload_blob(self, session: RegistrySession, ref: ImageRef, digest: str,
                           size: int, emit: Callable[[Message], Awaitable] | None,
                           progress_id: str = "") -> None:
        async def say(status: str, current: int = 0) -> None:
            if emit:
                await emit(Message(status, id=progress_id, current=current,
                                   total=size if current else 0))

        head = await session.request("HEAD", f"{ref.path}/blobs/{digest}")
        if head.status_code == 200:
            await say("Layer already exists")
            return
        location = ""
        for source in self.images.store.blob_sources(digest, ref.domain):
            if source == ref.path:
                continue
            mount = await session.request(
                "POST", f"{ref.path}/blobs/uploads/", params={"mount": digest, "from": source})
            if mount.status_code == 201:
                self.images.store.add_blob_source(digest, ref.domain, ref.path)
                await say(f"Mounted from {source}")
                return
            if mount.status_code == 202:
                location = _absolute(mount)
                break
        if not location:
            start = await session.request("POST", f"{ref.path}/blobs/uploads/")
            raise_for(start, f"starting upload of {digest}")
            location = _absolute(start)
        path = self.images.content.path(digest)
        sent = 0
        with path.open("rb") as file:
            while size - sent > CHUNK_SIZE:
                chunk = await asyncio.to_thread(file.read, CHUNK_SIZE)
                patch = await session.request(
                    "PATCH", location, content=chunk,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{sent}-{sent + len(chunk) - 1}"})
                raise_for(patch, f"uploading blob {digest}")
                location = _absolute(patch)
                sent += len(chunk)
                await say("Pushing", sent)
            rest = await asyncio.to_thread(file.read)
        separator = "&" if "?" in location else "?"
        done = await session.request(
            "PUT", f"{location}{separator}digest={digest}", content=rest,
            headers={"Content-Type": "application/octet-stream"})
        raise_for(done, f"uploading blob {digest}")
        self.images.store.add_blob_source(digest, ref.domain, ref.path)
        await say("Pushing", size)
        await say("Pushed")


def _layer_media_type(manifest_type: str) -> str:
    if manifest_type.endswith("zstd"):
        return LAYER_ZSTD
    return LAYER_TAR if manifest_type.endswith("tar") else LAYER_GZIP


def _absolute(response: Any) -> str:
    """The upload URL a registry answered with, made absolute."""
    location = response.headers.get("Location", "")
    if not location:
        raise Internal("registry gave no upload location")
    return str(response.request.url.join(location))


async def _relay(work: Awaitable[None], messages: asyncio.Queue[Message]
                 ) -> AsyncIterator[Message]:
    """Yield the messages `work` queues while it runs; its error ends the stream."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            getter = asyncio.ensure_future(messages.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield getter.result()
                continue
            getter.cancel()
            while not messages.empty():
                yield messages.get_nowait()
            task.result()
            return
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
