"""docker commit, and a builder's RUN step: a container's upperdir sent to
the image service as a new layer, with the container's config merged in
as Docker merges it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from functools import partial

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from services.container import upperdir
from services.container.chroot_thread import tar_chrooted
from services.container.commit_instructions import apply_changes
from services.container.container_events import ContainerEvents
from services.container.containers import Manager
from services.container.store import Container


class Commits:
    def __init__(self, manager: Manager, events: ContainerEvents) -> None:
        self._manager = manager
        self._events = events
        self._runtime = manager.runtime

    async def commit(self, request: container_pb2.CommitRequest) -> str:
        container = self._manager.get(request.container_id)
        tags = [f"{request.repo}:{request.tag or 'latest'}"] if request.repo else []
        if request.HasField("build_step"):
            layer_options = build_step_options(container.image_id, request.build_step)
        else:
            layer_options = commit_options(container, request)
        layer_options.comment, layer_options.author = request.comment, request.author
        layer_options.tags.extend(tags)
        layer_options.container_id = container.id
        upper = self._manager.bundle(container).path / "upper"

        async def messages() -> AsyncIterator[image_pb2.CommitLayerRequest]:
            yield image_pb2.CommitLayerRequest(options=layer_options)
            if upper.is_dir():
                async for chunk in tar_chrooted(str(upper),
                                                partial(upperdir.write_layer_tar, "/")):
                    yield image_pb2.CommitLayerRequest(data=chunk)

        paused_here = request.pause and container.state.status == "running"
        if paused_here:
            await self._runtime.pause(container.id)
        try:
            image_id = await self._manager.peers.commit_layer(messages())
        finally:
            if paused_here:
                await self._runtime.resume(container.id)
        if not request.HasField("build_step"):
            self._events.publish("commit", container, comment=request.comment,
                                 imageID=image_id, imageRef=tags[0] if tags else "",
                                 author=request.author)
        return image_id


def commit_options(container: Container, request: container_pb2.CommitRequest
                   ) -> image_pb2.CommitLayerOptions:
    """POST /commit: the request's config and changes over the container's."""
    config = container_pb2.ContainerConfig()
    config.CopyFrom(request.config)
    apply_changes(config, list(request.changes))
    merge_commit_config(config, container.config)
    return image_pb2.CommitLayerOptions(
        parent=container.image_id, config=image_config(config),
        created_by=" ".join(container.config.cmd.values),
        container_config=image_config(container.config), architecture=_architecture(),
        os="linux")


def build_step_options(parent: str, step: container_pb2.BuildStep
                       ) -> image_pb2.CommitLayerOptions:
    """A builder's step: its config and history as given; the platform is the
    parent image's (the image service's default when left empty)."""
    return image_pb2.CommitLayerOptions(
        parent=parent, config=step.config, created_by=step.created_by,
        container_config=step.container_config, hold=step.hold)


def merge_commit_config(config: container_pb2.ContainerConfig,
                        base: container_pb2.ContainerConfig) -> None:
    """Docker's commit merge: what the user did not set comes from the container."""
    if not config.user:
        config.user = base.user
    if not config.entrypoint.values and not config.cmd.values:
        if base.HasField("cmd"):
            config.cmd.CopyFrom(base.cmd)
        if base.HasField("entrypoint"):
            config.entrypoint.CopyFrom(base.entrypoint)
    keys = {entry.partition("=")[0] for entry in config.env}
    config.env[:0] = [entry for entry in base.env if entry.partition("=")[0] not in keys]
    for key, value in base.labels.items():
        config.labels.setdefault(key, value)
    for port in base.exposed_ports:
        if port not in config.exposed_ports:
            config.exposed_ports.append(port)
    for volume in base.volumes:
        if volume not in config.volumes:
            config.volumes.append(volume)
    for name in ("working_dir", "stop_signal", "hostname", "domainname"):
        if not getattr(config, name):
            setattr(config, name, getattr(base, name))
    if not config.HasField("healthcheck"):
        config.healthcheck.CopyFrom(base.healthcheck)
    if not config.on_build:
        config.on_build.extend(base.on_build)
    if not config.shell:
        config.shell.extend(base.shell)


def image_config(config: container_pb2.ContainerConfig) -> image_pb2.ImageConfig:
    image = image_pb2.ImageConfig(
        user=config.user, exposed_ports=list(config.exposed_ports), env=list(config.env),
        volumes=list(config.volumes), working_dir=config.working_dir,
        labels=dict(config.labels), stop_signal=config.stop_signal, shell=list(config.shell),
        on_build=list(config.on_build), args_escaped=config.args_escaped,
        hostname=config.hostname, domainname=config.domainname, tty=config.tty,
        open_stdin=config.open_stdin, stdin_once=config.stdin_once,
        attach_stdin=config.attach_stdin, attach_stdout=config.attach_stdout,
        attach_stderr=config.attach_stderr, image=config.image)
    if config.HasField("cmd"):
        image.cmd.CopyFrom(config.cmd)
    if config.HasField("entrypoint"):
        image.entrypoint.CopyFrom(config.entrypoint)
    if config.HasField("healthcheck"):
        image.healthcheck.CopyFrom(config.healthcheck)
    return image


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
