"""One build's stages and steps: each step an image (RUN through a
container, COPY/ADD/WORKDIR as a layer tar, the rest metadata-only), reused
from the cache when it can be, with Docker's output lines."""

from __future__ import annotations

import asyncio
import itertools
import json
import posixpath
import re
import secrets
import tarfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.builder import context as build_context
from services.builder import copier, instructions
from services.builder.metrics import CACHE_HITS, CACHE_MISSES, STEP_SECONDS
from services.builder.options import BuildOptions
from services.builder.rootfs import RootfsView
from services.builder.store import cache_key
from services.builder.words import process_word, process_words
from services.common.errors import BerthError, Internal, InvalidArgument, NotFound

if TYPE_CHECKING:
    from services.builder.builder import Builder

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USING_CACHE = {"stream": " ---> Using cache\n"}
PROXY_ARGS = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
              "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}


@dataclass
class Stage:
    index: int
    name: str
    image_id: str = ""
    config: image_pb2.ImageConfig = field(default_factory=image_pb2.ImageConfig)
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False
    author: str = ""
    architecture: str = ""
    os: str = ""


def go_quote_list(values: list[str]) -> str:
    """Go's %q of a []string, as Docker writes commands in history."""
    return "[" + " ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _env_dict(env: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)


def _set_env(config: image_pb2.ImageConfig, key: str, value: str) -> None:
    entries = [e for e in config.env if e.split("=", 1)[0] != key]
    entries.append(f"{key}={value}")
    del config.env[:]
    config.env.extend(entries)


def _literal(text: str) -> str:
    """`text` quoted so that word processing gives it back unchanged."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _expose_ports(spec: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = proto or "tcp"
    first, _, last = port.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        raise InvalidArgument(f"Invalid containerPort: {port}")
    return [f"{p}/{proto}" for p in range(int(first), int(last or first) + 1)]


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
        self.holders: list[str] = []
        self.lease_numbers = itertools.count()
        self.views: dict[str, RootfsView] = {}
        self.containers: list[str] = []
        self.step = 0
        self.total = 0

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

    async def view(self, image_id: str) -> RootfsView:
        """The file system of an image, leased for the rest of the build."""
        if not image_id:
            return RootfsView([])
        if image_id not in self.views:
            self.views[image_id] = RootfsView(await self.acquire(image_id))
        return self.views[image_id]

    async def acquire(self, image_id: str) -> list[str]:
        """An image's layer dirs, under a lease."""
        holder = f"build-{self.id}-{next(self.lease_numbers)}"
        self.holders.append(holder)
        self.builder.cache.hold("lease", holder)
        return await self.peers.acquire_rootfs(image_id, holder)

    async def unlease(self, holder: str) -> None:
        await self.peers.release_rootfs(holder)
        self.builder.cache.let_go("lease", holder)
        self.holders.remove(holder)

    async def release(self) -> None:
        """Let go of every lease, and remove the step containers not kept."""
        for holder in list(self.holders):
            await self.unlease(holder)
        for container_id in self.containers:
            await self.peers.remove_container(container_id)
        self.keep_containers()

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

    async def reuse(self, stage: Stage, key: str) -> bool:
        """Take the cache's image for `key` when it still exists; counts the
        hit or miss."""
        record = None if self.options.no_cache else self.builder.cache.lookup(key)
        image = None if record is None else await self.peers.inspect_image(record.image_id)
        if image is None:
            if record is not None:
                self.builder.cache.forget(key)
            CACHE_MISSES.inc()
            return False
        CACHE_HITS.inc()
        self.builder.cache.touch(key)
        stage.image_id = image.id
        return True

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
                     layer: Path | None = None, size: int = 0) -> str:
        options = image_pb2.CommitLayerOptions(
            parent=stage.image_id, config=stage.config, created_by=" ".join(created_by),
            author=stage.author, empty_layer=layer is None, architecture=stage.architecture,
            os=stage.os, container_config=self.step_config(stage, created_by))
        image_id = await self.peers.commit_layer(options, layer)
        self.builder.cache.record(key, stage.image_id, image_id, " ".join(created_by), size)
        return image_id

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
            stage.image_id, stage.config = previous.image_id, image_pb2.ImageConfig()
            stage.config.CopyFrom(previous.config)
            stage.architecture, stage.os = previous.architecture, previous.os
        elif base.lower() != "scratch":
            image = None
            async for item in self.base_image(base, spec.platform):
                if isinstance(item, image_pb2.Image):
                    image = item
                else:
                    yield item
            assert image is not None
            stage.image_id = image.id
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

    async def base_image(self, name: str, platform: str) -> AsyncIterator:
        """The image `name`, pulled first when missing or when asked to."""
        image = None if self.options.pull else await self.peers.inspect_image(name)
        if image is None:
            async for progress in self.peers.pull(name, platform or self.options.platform,
                                                  self.options.auth_for(name)):
                yield progress
            image = await self.peers.inspect_image(name)
            if image is None:
                raise NotFound(f"No such image: {name}")
        yield image

    # Instructions -------------------------------------------------------

    async def dispatch(self, stage: Stage, instruction: instructions.Instruction
                       ) -> AsyncIterator[dict]:
        started = time.perf_counter()
        handler = getattr(self, "do_" + instruction.name.lower())
        try:
            async for message in handler(stage, instruction):
                yield message
        finally:
            STEP_SECONDS.labels(instruction.name).observe(time.perf_counter() - started)

    async def metadata_step(self, stage: Stage, comment: str) -> AsyncIterator[dict]:
        """Commit a step that only changes the config (an empty layer)."""
        created_by = [*DEFAULT_SHELL, "#(nop) ", comment]
        key = self.step_key(stage, created_by)
        if await self.reuse(stage, key):
            yield USING_CACHE
            return
        stage.image_id = await self.commit(stage, created_by, key)

    def key_values(self, stage: Stage, ins: instructions.Instruction) -> list[tuple[str, str]]:
        """ENV/LABEL pairs, every word expanded with the environment from
        before the instruction (`ENV A=2 B=$A` gives B the old A), as Docker does."""
        pairs = [(self.word(stage, ins.args[i]), self.word(stage, ins.args[i + 1]))
                 for i in range(0, len(ins.args) - 1, 2)]
        if any(not key for key, _ in pairs):
            raise InvalidArgument(f"{ins.name} names can not be blank")
        return pairs

    async def do_env(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        pairs = self.key_values(stage, ins)
        for key, value in pairs:
            _set_env(stage.config, key, value)
        comment = "ENV " + " ".join(f"{k}={v}" for k, v in pairs)
        async for message in self.metadata_step(stage, comment):
            yield message

    async def do_label(self, stage: Stage, ins: instructions.Instruction
                       ) -> AsyncIterator[dict]:
        pairs = self.key_values(stage, ins)
        stage.config.labels.update(pairs)
        comment = "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
        async for message in self.metadata_step(stage, comment):
            yield message

    async def do_maintainer(self, stage: Stage, ins: instructions.Instruction
                            ) -> AsyncIterator[dict]:
        stage.author = " ".join(ins.args)
        async for message in self.metadata_step(stage, "MAINTAINER " + stage.author):
            yield message

    async def do_expose(self, stage: Stage, ins: instructions.Instruction
                        ) -> AsyncIterator[dict]:
        specs = [p for arg in ins.args
                 for p in process_words(arg, self.env_for_words(stage), self.dockerfile.escape)]
        ports = list(stage.config.exposed_ports)
        for spec in specs:
            ports += [p for p in _expose_ports(spec) if p not in ports]
        del stage.config.exposed_ports[:]
        stage.config.exposed_ports.extend(sorted(ports))
        async for message in self.metadata_step(stage, "EXPOSE " + " ".join(specs)):
            yield message

    async def do_user(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        stage.config.user = self.word(stage, ins.args[0])
        async for message in self.metadata_step(stage, "USER " + stage.config.user):
            yield message

    async def do_stopsignal(self, stage: Stage, ins: instructions.Instruction
                            ) -> AsyncIterator[dict]:
        stage.config.stop_signal = self.word(stage, ins.args[0])
        async for message in self.metadata_step(stage, "STOPSIGNAL " + stage.config.stop_signal):
            yield message

    async def do_volume(self, stage: Stage, ins: instructions.Instruction
                        ) -> AsyncIterator[dict]:
        volumes = [self.word(stage, v) for v in ins.args]
        if any(not v.strip() for v in volumes):
            raise InvalidArgument("VOLUME specified can not be an empty string")
        for volume in volumes:
            if volume not in stage.config.volumes:
                stage.config.volumes.append(volume)
        async for message in self.metadata_step(stage, f"VOLUME [{' '.join(volumes)}]"):
            yield message

    def command_line(self, stage: Stage, ins: instructions.Instruction) -> list[str]:
        if ins.json:
            return list(ins.args)
        return [*(stage.config.shell or DEFAULT_SHELL), ins.args[0]]

    async def do_cmd(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        cmd = self.command_line(stage, ins)
        stage.config.cmd.CopyFrom(types_pb2.StringList(values=cmd))
        stage.cmd_set = True
        async for message in self.metadata_step(stage, "CMD " + go_quote_list(cmd)):
            yield message

    async def do_entrypoint(self, stage: Stage, ins: instructions.Instruction
                            ) -> AsyncIterator[dict]:
        entrypoint = self.command_line(stage, ins)
        stage.config.entrypoint.CopyFrom(types_pb2.StringList(values=entrypoint))
        if not stage.cmd_set:
            stage.config.ClearField("cmd")
        async for message in self.metadata_step(stage, "ENTRYPOINT " + go_quote_list(entrypoint)):
            yield message

    async def do_shell(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        del stage.config.shell[:]
        stage.config.shell.extend(ins.args)
        async for message in self.metadata_step(stage, "SHELL " + go_quote_list(ins.args)):
            yield message

    async def do_onbuild(self, stage: Stage, ins: instructions.Instruction
                         ) -> AsyncIterator[dict]:
        stage.config.on_build.append(ins.args[0])
        async for message in self.metadata_step(stage, "ONBUILD " + ins.args[0]):
            yield message

    async def do_healthcheck(self, stage: Stage, ins: instructions.Instruction
                             ) -> AsyncIterator[dict]:
        kind = ins.args[0].upper()
        check = image_pb2.HealthConfig()
        if kind == "NONE":
            if len(ins.args) > 1:
                raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
            check.test.values.append("NONE")
        elif kind == "CMD":
            rest = ins.args[1:]
            if not rest or not rest[0]:
                raise InvalidArgument("Missing command after HEALTHCHECK CMD")
            check.test.values.extend(["CMD", *rest] if ins.json else ["CMD-SHELL", rest[0]])
            durations = {flag: instructions.duration_ns(ins.flags.get(flag, ""))
                         for flag in ("interval", "timeout", "start-period", "start-interval")}
            check.interval_ns, check.timeout_ns = durations["interval"], durations["timeout"]
            check.start_period_ns = durations["start-period"]
            check.start_interval_ns = durations["start-interval"]
            retries = ins.flags.get("retries", "0") or "0"
            if not retries.isdigit():
                raise InvalidArgument(f"strconv.ParseInt: parsing \"{retries}\": invalid syntax")
            check.retries = int(retries)
        else:
            raise InvalidArgument(f"Unknown type \"{kind}\" in HEALTHCHECK "
                                  "(try CMD or NONE)")
        stage.config.healthcheck.CopyFrom(check)
        async for message in self.metadata_step(
                stage, "HEALTHCHECK &{" + go_quote_list(list(check.test.values)) + "}"):
            yield message

    async def do_arg(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        name, sep, default = ins.args[0].partition("=")
        self.used_args.add(name)
        if name in self.options.build_args:
            value: str | None = self.options.build_args[name]
        elif sep:
            value = self.word(stage, default)
        else:
            value = self.meta_args.get(name)
        stage.args[name] = value
        async for message in self.metadata_step(stage, "ARG " + ins.args[0]):
            yield message

    async def do_workdir(self, stage: Stage, ins: instructions.Instruction
                         ) -> AsyncIterator[dict]:
        path = self.word(stage, ins.args[0])
        workdir = posixpath.normpath(posixpath.join(stage.config.working_dir or "/", path))
        stage.config.working_dir = workdir
        created_by = [*DEFAULT_SHELL, f"#(nop) WORKDIR {workdir}"]
        key = self.step_key(stage, created_by)
        if await self.reuse(stage, key):
            yield USING_CACHE
            return
        view = await self.view(stage.image_id)
        if view.is_dir(workdir):
            stage.image_id = await self.commit(stage, created_by, key)
            return
        with self.builder.scratch_file() as layer:
            with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
                copier.LayerWriter(tar, view, copier.Owner()).directory(workdir)
            stage.image_id = await self.commit(stage, created_by, key, layer,
                                               layer.stat().st_size)

    async def do_copy(self, stage: Stage, ins: instructions.Instruction
                      ) -> AsyncIterator[dict]:
        async for message in self.copy(stage, ins):
            yield message

    async def do_add(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        for src in ins.args[:-1]:
            if re.match(r"^(https?|git)://|^git@", src):
                raise InvalidArgument(f"ADD failed: source {src} is a URL; this engine has no "
                                      "remote downloads, put the file in the build context")
        async for message in self.copy(stage, ins):
            yield message

    async def copy_source(self, stage: Stage, source: str) -> copier.SourceTree:
        if not source:
            return copier.SourceTree(root=self.ctx.root, digests=self.ctx.digests)
        earlier = {s.name: s for s in self.stages[:-1] if s.name}
        if source.lower() in earlier:
            return copier.SourceTree(view=await self.view(earlier[source.lower()].image_id))
        if source.isdigit():
            index = int(source)
            if index >= stage.index:
                raise InvalidArgument(f"invalid from flag value {source}: refers to current "
                                      "build stage" if index == stage.index else
                                      f"invalid from flag value {source}: stage not found")
            return copier.SourceTree(view=await self.view(self.stages[index].image_id))
        image = None
        try:
            async for item in self.base_image(source, self.options.platform):
                if isinstance(item, image_pb2.Image):
                    image = item
        except BerthError as exc:
            raise InvalidArgument(f"invalid from flag value {source}: {exc.message}") from exc
        assert image is not None
        return copier.SourceTree(view=await self.view(image.id))

    async def copy(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        name = ins.name
        words = [self.word(stage, a) for a in ins.args]
        chown = self.word(stage, ins.flags.get("chown", ""))
        chmod = copier.parse_chmod(ins.flags.get("chmod", ""), name)
        tree = await self.copy_source(stage, self.word(stage, ins.flags.get("from", "")))
        parent = await self.view(stage.image_id)
        plan = await asyncio.to_thread(copier.plan_copy, tree, words[:-1], words[-1],
                                stage.config.working_dir, parent, name)
        owner = copier.parse_chown(chown, parent)
        dest = words[-1]
        comment = f"#(nop) {name} {plan.kind}:{plan.digest} in {dest} "
        created_by = [*DEFAULT_SHELL, comment]
        key = self.step_key(stage, created_by, f"{owner}|{chmod}")
        if await self.reuse(stage, key):
            yield USING_CACHE
            return
        with self.builder.scratch_file() as layer:
            await asyncio.to_thread(_write_layer, layer, parent, owner, chmod, plan)
            stage.image_id = await self.commit(stage, created_by, key, layer,
                                               layer.stat().st_size)

    async def do_run(self, stage: Stage, ins: instructions.Instruction) -> AsyncIterator[dict]:
        cmd = self.command_line(stage, ins)
        arg_env = self.build_arg_env(stage)
        declared = sorted(e for e in arg_env if e.split("=", 1)[0] in stage.args)
        saved = [f"|{len(declared)}", *declared, *cmd] if arg_env else cmd
        key = self.step_key(stage, saved)
        if await self.reuse(stage, key):
            yield USING_CACHE
            return
        container_id, warnings = await self.peers.create_container(
            self.run_request(stage, cmd, arg_env))
        self.containers.append(container_id)
        self.builder.cache.hold("container", container_id)
        for warning in warnings:
            yield self.say(f" ---> [Warning] {warning}\n")
        yield self.say(f" ---> Running in {container_id[:12]}\n")
        exit_code = 0
        async for item in self.peers.run_container(container_id):
            if isinstance(item, int):
                exit_code = item
            else:
                yield self.say(item)
        if exit_code != 0:
            raise Internal(f"The command '{' '.join(cmd)}' returned a non-zero code: "
                           f"{exit_code}")
        step = container_pb2.BuildStep(config=stage.config, created_by=" ".join(saved),
                                       container_config=self.step_config(stage, saved))
        image_id = await self.peers.commit_step(container_id, stage.author, step)
        self.builder.cache.record(key, stage.image_id, image_id, " ".join(saved),
                                  await self.added_size(stage.image_id, image_id))
        stage.image_id = image_id
        if self.options.remove or self.options.force_remove:
            await self.peers.remove_container(container_id)
            yield self.say(f"Removing intermediate container {container_id[:12]}\n")
        self.containers.remove(container_id)
        self.builder.cache.let_go("container", container_id)

    async def added_size(self, parent: str, image_id: str) -> int:
        """Bytes a step's layer adds to its parent image."""
        image = await self.peers.inspect_image(image_id)
        base = await self.peers.inspect_image(parent) if parent else None
        return max(0, (image.size if image else 0) - (base.size if base else 0))

    @staticmethod
    def image_config(stage: Stage) -> container_pb2.ContainerConfig:
        """The step's resulting image config in the container service's shape."""
        fields = json_format.MessageToDict(stage.config, preserving_proto_field_name=True)
        return json_format.ParseDict(fields, container_pb2.ContainerConfig(),
                                     ignore_unknown_fields=True)

    def run_request(self, stage: Stage, cmd: list[str], arg_env: list[str]
                    ) -> container_pb2.CreateContainerRequest:
        config = self.image_config(stage)
        config.image = stage.image_id
        config.cmd.CopyFrom(types_pb2.StringList(values=cmd))
        config.entrypoint.CopyFrom(types_pb2.StringList())
        config.env.extend(arg_env)
        config.attach_stdout = config.attach_stderr = True
        config.ClearField("healthcheck")
        o = self.options
        host = container_pb2.HostConfig(
            network_mode=o.network_mode if o.network_mode not in ("", "default") else "",
            extra_hosts=o.extra_hosts, shm_size=o.shm_size,
            resources=container_pb2.Resources(
                memory=o.memory, memory_swap=o.memory_swap, cpu_shares=o.cpu_shares,
                cpu_period=o.cpu_period, cpu_quota=o.cpu_quota, cpuset_cpus=o.cpuset_cpus))
        return container_pb2.CreateContainerRequest(config=config, host_config=host)


def _write_layer(layer: Path, parent: RootfsView, owner: copier.Owner, chmod: int | None,
                 plan: copier.CopyPlan) -> None:
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        writer = copier.LayerWriter(tar, parent, owner, chmod)
        for entry in plan.entries:
            writer.add(entry)

