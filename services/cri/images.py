"""CRI images are berth images: pulls, status, listing and removal through
the image service."""

from __future__ import annotations

import base64
import os
import time

from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from k8s.runtime.v1 import api_pb2
from services.common.config import Config
from services.common.errors import Internal, InvalidArgument, NotFound
from services.cri.peers import Peers


def registry_auth(auth: api_pb2.AuthConfig) -> types_pb2.RegistryAuth:
    """kubelet's AuthConfig as berth's RegistryAuth; `auth` is base64
    "user:password", as in a docker config.json."""
    username, password = auth.username, auth.password
    if auth.auth:
        try:
            username, _, password = base64.b64decode(auth.auth).decode().partition(":")
        except ValueError as exc:
            raise InvalidArgument(f"invalid auth in AuthConfig: {exc}") from exc
    return types_pb2.RegistryAuth(
        username=username, password=password, server_address=auth.server_address,
        identity_token=auth.identity_token, registry_token=auth.registry_token)


def image_user(config: image_pb2.ImageConfig) -> tuple[int | None, str]:
    """The image's USER as CRI reports it: a numeric uid, or a user name."""
    user = config.user.partition(":")[0]
    if not user:
        return 0, ""
    return (int(user), "") if user.isdigit() else (None, user)


def cri_image(image: image_pb2.Image) -> api_pb2.Image:
    uid, username = image_user(image.config)
    result = api_pb2.Image(id=image.id, repo_tags=image.repo_tags,
                           repo_digests=image.repo_digests, size=image.size,
                           username=username, spec=api_pb2.ImageSpec(image=image.id))
    if uid is not None:
        result.uid.value = uid
    return result


class Images:
    def __init__(self, config: Config, peers: Peers) -> None:
        self._config = config
        self._peers = peers

    async def pull(self, reference: str, auth: api_pb2.AuthConfig) -> str:
        """Pull `reference`; its image ID (what containerd answers as image_ref)."""
        if not reference:
            raise InvalidArgument("image reference is required")
        request = image_pb2.PullRequest(reference=reference, auth=registry_auth(auth))
        async for progress in self._peers.images.Pull(request):
            if progress.error:
                raise _pull_error(reference, progress.error)
        image = await self._peers.inspect_image(reference)
        if image is None:
            raise Internal(f"pulled {reference} but the image service does not have it")
        return image.id

    async def ensure(self, reference: str) -> image_pb2.Image:
        """The image, pulled first when the node does not have it."""
        image = await self._peers.inspect_image(reference)
        if image is None:
            await self.pull(reference, api_pb2.AuthConfig())
            image = await self._peers.inspect_image(reference)
        if image is None:
            raise NotFound(f"image {reference} not found")
        return image

    async def status(self, reference: str) -> api_pb2.Image | None:
        image = await self._peers.inspect_image(reference) if reference else None
        return cri_image(image) if image is not None else None

    async def list(self, wanted: str) -> list[api_pb2.Image]:
        if wanted:
            found = await self.status(wanted)
            return [found] if found else []
        response = await self._peers.images.List(image_pb2.ListImagesRequest())
        return [cri_image(image) for image in response.images]

    async def remove(self, reference: str) -> None:
        """Remove the image with every tag it has; one that is gone is success."""
        image = await self._peers.inspect_image(reference) if reference else None
        if image is None:
            return
        try:
            await self._peers.images.Remove(
                image_pb2.RemoveImageRequest(name=image.id, force=True))
        except NotFound:
            return

    async def filesystem_usage(self) -> tuple[api_pb2.FilesystemUsage, api_pb2.FilesystemUsage]:
        """Bytes of the images, and the filesystem holding the containers."""
        response = await self._peers.images.List(image_pb2.ListImagesRequest())
        now = time.time_ns()
        images = api_pb2.FilesystemUsage(
            timestamp=now, fs_id=api_pb2.FilesystemIdentifier(
                mountpoint=str(self._config.data_root / "image")))
        images.used_bytes.value = sum(image.size for image in response.images)
        images.inodes_used.value = 0
        containers_dir = self._config.data_root / "container"
        stats = os.statvfs(containers_dir if containers_dir.exists() else self._config.data_root)
        containers = api_pb2.FilesystemUsage(
            timestamp=now, fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(containers_dir)))
        containers.used_bytes.value = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        containers.inodes_used.value = stats.f_files - stats.f_ffree
        return images, containers


def _pull_error(reference: str, message: str) -> Exception:
    text = f"failed to pull image {reference!r}: {message}"
    if "not found" in message or "manifest unknown" in message:
        return NotFound(text)
    return Internal(text)
