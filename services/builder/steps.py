"""One build: its stages, image views, image holds, step cache and output
lines. Each instruction is run by its handler (handlers.py); a step becomes
an image, reused from the cache when it can be.

The images a build stands on are held through the image service's rootfs
leases (owner "build"), each taken in the same call that finds or makes the
image, so no prune or `docker rmi` can take one mid-build: a stage holds the
image it is at until the next step's image is held, and the base and COPY
--from images are held until the build ends. A restarted build service drops
what a crashed one held (Builder.let_go_of_leftovers)."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.builder import context as build_context
from services.builder import instructions
from services.builder.handlers import HANDLERS
from services.builder.image_files import ImageFiles
from services.builder.metrics import CACHE_HITS, CACHE_MISSES, STEP_SECONDS
from services.builder.options import BuildOptions
from services.builder.store import cache_key
from services.builder.words import process_word
from services.common import owners
from services.common.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from services.builder.builder import Builder

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}


@dataclass
class Stage:
    index: int
    name: str
    image_id: str = ""
    holder: str = ""                # the build's hold on image_id
    config: image_pb2.ImageConfig = field(default_factory=image_pb2.ImageConfig)
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False
    author: str = ""
    architecture: str = ""
    os: str = ""


def _env_dict(env: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)


def _literal(text: str) -> str:
    """`text` quoted so that word processing gives it back unchanged."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


class Build:
    """One build: its context, stages, output and the images it made."""

    def __init__(self, builder: Builder, options: BuildOptions, ctx: build_context.Context,
                 dockerfile: instructions.Dockerfile) -> None:
        self.builder = builder
        self.peers = builder.peers
        self.options = options
        self.ctx = ctx
        self.dockerfile = dockerfile
        self.id = secrets.token_hex(6)
        self.stages: list[Stage] = []
        self.meta_args: dict[str, str] = {}
        self.used_args: set[str] = set()
        self.views: dict[str, ImageFiles] = {}
        self.views_dir = builder.workdir / f"views-{self.id}"
        self.containers: list[str] = []
        self.holders: set[str] = set()
        self.hold_numbers = itertools.count()
        self.step = 0
        self.total = 0
        self.cache_sources = list(options.cache_from)

    # Output -------------------------------------------------------------

    @staticmethod
    def say(text: str) -> dict:
        return {"stream": text}

    # Helpers ------------------------------------------------------------

    def env_for_words(self, stage: Stage) -> dict[str, str]:
        env = {k: v for k, v in stage.args.items() if v is not None}
        env.update(_env_dict(list(stage.config.env)))
        return env

    def word(self, stage: Stage, text: str) -> str:
        try:
            return process_word(text, self.env_for_words(stage), self.dockerfile.escape)
        except InvalidArgument as exc:
            raise InvalidArgument(f"failed to process {json.dumps(text)}: {exc.message}"
                                  ) from exc

    def view(self, image_id: str) -> ImageFiles:
        """The files of an image, read through the container service as the
        build needs them."""
        if image_id not in self.views:
            self.views[image_id] = ImageFiles(image_id, self.peers, self.builder.cache,
                                              self.views_dir / str(len(self.views)))
        return self.views[image_id]

    async def release(self) -> None:
        """Drop the image views, remove the step containers not kept, and let
        go of the images held."""
        for view in self.views.values():
            await view.close()
        await asyncio.to_thread(shutil.rmtree, self.views_dir, True)
        for container_id in self.containers:
            await self.peers.remove_container(container_id)
        self.keep_containers()
        for holder in list(self.holders):
            await self.let_go(holder)

    # Image holds --------------------------------------------------------

    def new_hold(self) -> image_pb2.ImageHold:
        """A hold for the next image the build takes, noted before it is
        asked for, so that one taken by a call cut short is released too."""
        hold = image_pb2.ImageHold(holder=f"build-{self.id}-{next(self.hold_numbers)}",
                                   owner=owners.BUILD)
        self.holders.add(hold.holder)
        return hold

    async def let_go(self, holder: str) -> None:
        """Release a hold; one the image service missed is swept once the
        build is over (services.builder.holds)."""
        if await self.peers.release_image(holder):
            self.holders.discard(holder)

    async def settle(self, stage: Stage, image_id: str, holder: str) -> None:
        """The stage moves on to `image_id`, held by `holder`, and lets go of
        the image it was at (the new one's parent, or no longer needed)."""
        previous, stage.image_id, stage.holder = stage.holder, image_id, holder
        if previous:
            await self.let_go(previous)

    def keep_containers(self) -> None:
        for container_id in self.containers:
            self.builder.cache.let_go("container", container_id)
        self.containers.clear()

    def build_arg_env(self, stage: Stage) -> list[str]:
        """Build args a RUN sees: declared ones with values, and given proxy args;
        never those an ENV of the same name overrides."""
        env_keys = set(_env_dict(list(stage.config.env)))
        result = {k: v for k, v in stage.args.items() if v is not None and k not in env_keys}
        for key in PROXY_ARGS & set(self.options.build_args):
            if key not in env_keys:
                result.setdefault(key, self.options.build_args[key])
                self.used_args.add(key)
        return [f"{k}={v}" for k, v in result.items()]

    # Cache --------------------------------------------------------------

    async def reuse(self, stage: Stage, key: str, created_by: list[str]) -> bool:
        """Take the cache's image for `key` when it still exists, or, with
        --cache-from, a step of a source image's history; counts the hit or
        miss."""
        record = None if self.options.no_cache else self.builder.cache.lookup(key)
        if record is None and (self.options.no_cache or not self.cache_sources):
            CACHE_MISSES.inc()
            return False
        hold = self.new_hold()
        image = None if record is None else await self.peers.hold_image(record.image_id, hold)
        if image is None and record is not None:
            self.builder.cache.forget(key)
        hit = "" if image is None else image.id
        if self.cache_sources:
            hit = await self.from_cache_sources(stage, created_by, hit, hold)
            if hit and record is None:
                self.builder.cache.record(key, stage.image_id, hit, " ".join(created_by), 0)
        if not hit:
            await self.let_go(hold.holder)
            CACHE_MISSES.inc()
            return False
        CACHE_HITS.inc()
        self.builder.cache.touch(key)
        await self.settle(stage, hit, hold.holder)
        return True

    async def from_cache_sources(self, stage: Stage, created_by: list[str],
                                 local_hit: str, hold: image_pb2.ImageHold) -> str:
        """The classic builder's --cache-from: the build's own hit counts
        only when a source descends from it; otherwise a source's history
        gives the step, and later steps look in that source only. The
        image found is held by `hold`."""
        reply = await self.peers.cache_from(image_pb2.CacheFromRequest(
            parent=stage.image_id, sources=self.cache_sources, created_by=" ".join(created_by),
            config=stage.config, local_hit=local_hit, hold=hold))
        if reply.source:
            self.cache_sources = [reply.source]
        return reply.id

    def step_key(self, stage: Stage, created_by: list[str], extra: str = "") -> str:
        return cache_key(stage.image_id, {
            "cmd": created_by,
            "config": stage.config.SerializeToString(deterministic=True).hex(),
            "extra": extra,
        })

    @staticmethod
    def step_config(stage: Stage, created_by: list[str]) -> image_pb2.ImageConfig:
        """Docker's ContainerConfig of a step: the config it ran with, its
        command being the history line, on the parent image."""
        config = image_pb2.ImageConfig()
        config.CopyFrom(stage.config)
        config.image = stage.image_id
        config.cmd.CopyFrom(types_pb2.StringList(values=created_by))
        return config

    async def commit(self, stage: Stage, created_by: list[str], key: str,
                     layer: Path | None = None, size: int = 0) -> None:
        """The step's image, held, becomes the stage's."""
        hold = self.new_hold()
        options = image_pb2.CommitLayerOptions(
            parent=stage.image_id, config=stage.config, created_by=" ".join(created_by),
            author=stage.author, empty_layer=layer is None, architecture=stage.architecture,
            os=stage.os, container_config=self.step_config(stage, created_by), hold=hold)
        image_id = await self.peers.commit_layer(options, layer)
        self.builder.cache.record(key, stage.image_id, image_id, " ".join(created_by), size)
        await self.settle(stage, image_id, hold.holder)

    # Stages -------------------------------------------------------------

    async def run(self) -> AsyncIterator[dict]:
        stages = self.dockerfile.stages
        if self.options.target:
            names = [s.name for s in stages]
            if self.options.target.lower() not in names:
                raise InvalidArgument(
                    f"failed to reach build target {self.options.target} in Dockerfile")
            stages = stages[:names.index(self.options.target.lower()) + 1]
        if stages:
            stages[-1].instructions.extend(self.label_instructions())
        self.total = len(self.dockerfile.meta_args) + sum(1 + len(s.instructions)
                                                          for s in stages)
        for arg in self.dockerfile.meta_args:
            yield self.step_line(arg.original)
            self.meta_arg(arg)
        for index, spec in enumerate(stages):
            stage = Stage(index=index, name=spec.name)
            self.stages.append(stage)
            yield self.step_line(spec.original)
            async for message in self.from_(stage, spec):
                yield message
            for instruction in spec.instructions:
                yield self.step_line(instruction.original)
                async for message in self.dispatch(stage, instruction):
                    yield message
                yield self.say(f" ---> {stage.image_id.removeprefix('sha256:')[:12]}\n")
            if stage.image_id:
                yield {"aux": {"ID": stage.image_id}}
        unused = sorted(set(self.options.build_args) - self.used_args)
        if unused:
            yield self.say(f"[Warning] One or more build-args [{' '.join(unused)}] "
                           "were not consumed\n")

    def label_instructions(self) -> list[instructions.Instruction]:
        """The `labels` option as dockerd 20.10 adds it: one LABEL step per
        label, sorted, after the last instruction, values taken literally."""
        return [instructions.Instruction(name="LABEL", args=[_literal(k), _literal(v)],
                                         flags={}, json=False, original=f"LABEL {k}={v}",
                                         line=0)
                for k, v in sorted(self.options.labels.items())]

    def step_line(self, original: str) -> dict:
        self.step += 1
        return self.say(f"Step {self.step}/{self.total} : {original}\n")

    def meta_arg(self, arg: instructions.Instruction) -> None:
        name, sep, default = arg.args[0].partition("=")
        self.used_args.add(name)
        value = (self.options.build_args[name] if name in self.options.build_args
                 else process_word(default, self.meta_args, self.dockerfile.escape)
                 if sep else None)
        if value is not None:
            self.meta_args[name] = value

    async def from_(self, stage: Stage, spec: instructions.Stage) -> AsyncIterator[dict]:
        base = process_word(spec.base, self.meta_args, self.dockerfile.escape)
        if not base:
            raise InvalidArgument(f"base name ({spec.base}) should not be blank")
        previous = next((s for s in self.stages[:-1] if s.name and s.name == base.lower()),
                        None)
        if previous is not None:
            if previous.image_id:
                hold = self.new_hold()
                await self.peers.hold_image(previous.image_id, hold)
                await self.settle(stage, previous.image_id, hold.holder)
            stage.config = image_pb2.ImageConfig()
            stage.config.CopyFrom(previous.config)
            stage.architecture, stage.os = previous.architecture, previous.os
        elif base.lower() != "scratch":
            image = None
            hold = self.new_hold()
            async for item in self.base_image(base, spec.platform, hold):
                if isinstance(item, image_pb2.Image):
                    image = item
                else:
                    yield item
            assert image is not None
            await self.settle(stage, image.id, hold.holder)
            stage.config.CopyFrom(image.config)
            stage.architecture, stage.os = image.architecture, image.os
        if not any(e.startswith("PATH=") for e in stage.config.env):
            stage.config.env.append(DEFAULT_PATH)
        triggers = list(stage.config.on_build)
        del stage.config.on_build[:]
        yield self.say(f" ---> {stage.image_id.removeprefix('sha256:')[:12]}\n")
        if triggers:
            plural = "s" if len(triggers) > 1 else ""
            yield self.say(f"# Executing {len(triggers)} build trigger{plural}\n")
            for text in triggers:
                async for message in self.dispatch(stage, instructions.parse_trigger(text)):
                    yield message
            yield self.say(f" ---> {stage.image_id.removeprefix('sha256:')[:12]}\n")

    async def base_image(self, name: str, platform: str, hold: image_pb2.ImageHold
                         ) -> AsyncIterator:
        """The image `name`, held by `hold`; pulled first when missing or
        when asked to."""
        image = None if self.options.pull else await self.peers.hold_image(name, hold)
        if image is None:
            async for progress in self.peers.pull(name, platform or self.options.platform,
                                                  self.options.auth_for(name)):
                yield progress
            image = await self.peers.hold_image(name, hold)
            if image is None:
                raise NotFound(f"No such image: {name}")
        yield image

    # Instructions -------------------------------------------------------

    async def dispatch(self, stage: Stage, instruction: instructions.Instruction
                       ) -> AsyncIterator[dict]:
        started = time.perf_counter()
        try:
            async for message in HANDLERS[instruction.name](self, stage, instruction):
                yield message
        finally:
            STEP_SECONDS.labels(instruction.name).observe(time.perf_counter() - started)
