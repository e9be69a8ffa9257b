"""The image and container services as the builder needs them.

Calls go through services.common.peers: their errors come back as berth
errors, and build output comes back as Docker JSON message dicts.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc

from berth.container.v1 import container_pb2, container_pb2_grpc
from berth.image.v1 import image_pb2, image_pb2_grpc
from berth.types.v1 import types_pb2
from services.common import errors
from services.common.config import Config
from services.common.peers import PeerClient, PeerStream

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageUsage:
    kept_by_tags: set[str]
    in_use: set[str]


class Peers:
    def __init__(self, config: Config) -> None:
        self.images = PeerClient.connect(config, "image", image_pb2_grpc.ImageServiceStub)
        self.containers = PeerClient.connect(config, "container",
                                     container_pb2_grpc.ContainerServiceStub)

    async def close(self) -> None:
        await self.images.close()
        await self.containers.close()

    async def inspect_image(self, name: str) -> image_pb2.Image | None:
        try:
            return await self.images.Inspect(image_pb2.InspectImageRequest(name=name))
        except errors.NotFound:
            return None

    async def hold_image(self, name: str, hold: image_pb2.ImageHold) -> image_pb2.Image | None:
        """The image `name`, found and held in one call (a rootfs lease);
        None when it does not exist."""
        try:
            reply = await self.images.AcquireRootfs(image_pb2.AcquireRootfsRequest(
                image=name, holder=hold.holder, owner=hold.owner))
        except errors.NotFound:
            return None
        return reply.image

    async def release_image(self, holder: str) -> bool:
        """Whether the hold is gone (released, or never taken)."""
        return await _gone(self.images.ReleaseRootfs(image_pb2.ReleaseRootfsRequest(
            holder=holder)))

    async def cache_from(self, request: image_pb2.CacheFromRequest
                         ) -> image_pb2.CacheFromResponse:
        return await self.images.CacheFrom(request)

    async def pull(self, reference: str, platform: str,
                   auth: types_pb2.RegistryAuth | None) -> AsyncIterator[dict]:
        async for message in self.images.Pull(image_pb2.PullRequest(
                reference=reference, platform=platform, auth=auth)):
            if message.error:
                raise errors.NotFound(message.error)
            out = {"status": message.status}
            if message.id:
                out["id"] = message.id
            if message.progress:
                out["progress"] = message.progress
            yield out

    async def commit_layer(self, options: image_pb2.CommitLayerOptions,
                           layer: Path | None) -> str:
        async def requests() -> AsyncIterator[image_pb2.CommitLayerRequest]:
            yield image_pb2.CommitLayerRequest(options=options)
            if layer is None:
                return
            with layer.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, _CHUNK):
                    yield image_pb2.CommitLayerRequest(data=chunk)

        return (await self.images.CommitLayer(requests())).id

    async def tag(self, image_id: str, reference: str) -> None:
        repo, tag = split_reference(reference)
        await self.images.Tag(image_pb2.TagRequest(source=image_id, repo=repo, tag=tag))

    async def image_usage(self) -> ImageUsage:
        """Which images a tag keeps (tagged ones and their ancestors), and
        which are held by containers or running builds."""
        listed = await self.images.List(image_pb2.ListImagesRequest(all=True))
        parents = {image.id: image.parent for image in listed.images}
        kept: set[str] = set()
        for image in listed.images:
            current = image.id if image.repo_tags else ""
            while current and current not in kept:
                kept.add(current)
                current = parents.get(current, "")
        return ImageUsage(kept_by_tags=kept,
                          in_use={image.id for image in listed.images if image.holds > 0})

    async def remove_untagged_image(self, image_id: str) -> bool:
        """Remove an image nobody named (a build step's); tagged images and
        images in use stay. Whether it went."""
        try:
            image = await self.images.Inspect(image_pb2.InspectImageRequest(name=image_id))
            if image.repo_tags:
                return False
            await self.images.Remove(image_pb2.RemoveImageRequest(name=image_id))
        except errors.BerthError:
            return False
        return True

    async def create_container(self, request: container_pb2.CreateContainerRequest
                               ) -> tuple[str, list[str]]:
        reply = await self.containers.Create(request)
        return reply.id, list(reply.warnings)

    async def run_container(self, container_id: str) -> AsyncIterator[str | int]:
        """Attach, start, stream the output as text (stderr in red, as Docker
        shows it); the last item is the exit code."""
        waiter = self.containers.Wait(container_pb2.WaitContainerRequest(
            id=container_id, condition="next-exit"))
        await waiter.read()
        attach = self.containers.Attach()
        await attach.write(container_pb2.AttachRequest(options=container_pb2.AttachOptions(
            id=container_id, stdout=True, stderr=True, stream=True)))
        await self.containers.Start(container_pb2.StartContainerRequest(id=container_id))
        decoders = {stream: codecs.getincrementaldecoder("utf-8")(errors="replace")
                    for stream in (container_pb2.IOFrame.STDOUT, container_pb2.IOFrame.STDERR)}
        async for frame in attach:
            if text := decoders[frame.stream].decode(frame.data):
                yield _colour(frame.stream, text)
        for stream, decoder in decoders.items():
            if tail := decoder.decode(b"", final=True):
                yield _colour(stream, tail)
        result = await waiter.read()
        if result is grpc.aio.EOF:
            raise errors.Internal(f"wait for container {container_id} ended early")
        if result.error:
            raise errors.Internal(result.error)
        yield result.status_code

    async def commit_step(self, container_id: str, author: str,
                          step: container_pb2.BuildStep) -> str:
        """A RUN step's container as an image with exactly the step's config
        and history line (held as the step's `hold` says)."""
        reply = await self.containers.Commit(container_pb2.CommitRequest(
            container_id=container_id, author=author, build_step=step))
        return reply.id

    async def keep_mounted(self, container_id: str) -> PeerStream:
        """Keep the container's own file system mounted (one mount for the
        StatPath and GetArchive calls that follow) until the returned call is
        cancelled; the container service unmounts it when the call ends,
        also when this service goes away."""
        call = self.containers.KeepMounted(container_pb2.ContainerRef(id=container_id))
        try:
            if await call.read() is grpc.aio.EOF:
                raise errors.Internal(f"container {container_id[:12]} was not kept mounted")
        except BaseException:
            call.cancel()
            raise
        return call

    async def stat_path(self, container_id: str, path: str) -> container_pb2.PathStat | None:
        """A path's stat in the container's own file system (docker cp's,
        without volumes: an image's VOLUME paths hold its content), None
        when it is missing."""
        try:
            return await self.containers.StatPath(
                container_pb2.PathRequest(id=container_id, path=path, rootfs_only=True))
        except errors.NotFound:
            return None

    async def get_archive(self, container_id: str, path: str) -> AsyncIterator[bytes]:
        """A path of the container's own file system (without volumes) as
        docker cp's tar (entries named after its base)."""
        async for chunk in self.containers.GetArchive(
                container_pb2.PathRequest(id=container_id, path=path, rootfs_only=True)):
            if chunk.data:
                yield chunk.data

    async def remove_container(self, container_id: str) -> bool:
        """Whether the container is gone (removed, or never known)."""
        return await _gone(self.containers.Remove(
            container_pb2.RemoveContainerRequest(id=container_id, force=True,
                                               remove_volumes=True)))


async def _gone(call: Awaitable) -> bool:
    try:
        await call
    except errors.NotFound:
        return True
    except errors.BerthError:
        return False
    return True


def _colour(stream: int, text: str) -> str:
    return f"\x1b[91m{text}\x1b[0m" if stream == container_pb2.IOFrame.STDERR else text


def split_reference(reference: str) -> tuple[str, str]:
    """"repo[:tag]" -> (repo, tag); a registry port is not a tag."""
    repo, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        return reference, "latest"
    return repo, tag
