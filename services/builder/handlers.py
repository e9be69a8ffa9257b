"""What each Dockerfile instruction does to a stage, one handler per
instruction in HANDLERS: config-only instructions commit an empty layer,
COPY/ADD/WORKDIR a layer tar, RUN a container's changes. Handlers work on a
Build (steps.py) and reach other services only through its peers."""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.builder import copier, instructions
from services.builder.image_files import ImageFiles
from services.builder.words import process_words
from services.common.errors import BerthError, Internal, InvalidArgument

if TYPE_CHECKING:
    from services.builder.steps import Build, Stage

DEFAULT_SHELL = ["/bin/sh", "-c"]
USING_CACHE = {"stream": " ---> Using cache\n"}


def go_quote_list(values: list[str]) -> str:
    """Go's %q of a []string, as Docker writes commands in history."""
    return "[" + " ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _set_env(config: image_pb2.ImageConfig, key: str, value: str) -> None:
    entries = [e for e in config.env if e.split("=", 1)[0] != key]
    entries.append(f"{key}={value}")
    del config.env[:]
    config.env.extend(entries)


def _expose_ports(spec: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = proto or "tcp"
    first, _, last = port.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        raise InvalidArgument(f"Invalid containerPort: {port}")
    return [f"{p}/{proto}" for p in range(int(first), int(last or first) + 1)]


async def metadata_step(build: Build, stage: Stage, comment: str) -> AsyncIterator[dict]:
    """Commit a step that only changes the config (an empty layer)."""
    created_by = [*DEFAULT_SHELL, "#(nop) ", comment]
    key = build.step_key(stage, created_by)
    if await build.reuse(stage, key, created_by):
        yield USING_CACHE
        return
    await build.commit(stage, created_by, key)


def key_values(build: Build, stage: Stage, ins: instructions.Instruction) -> list[tuple[str, str]]:
    """ENV/LABEL pairs, every word expanded with the environment from
    before the instruction (`ENV A=2 B=$A` gives B the old A), as Docker does."""
    pairs = [(build.word(stage, ins.args[i]), build.word(stage, ins.args[i + 1]))
             for i in range(0, len(ins.args) - 1, 2)]
    if any(not key for key, _ in pairs):
        raise InvalidArgument(f"{ins.name} names can not be blank")
    return pairs


async def handle_env(build: Build, stage: Stage,
                     ins: instructions.Instruction) -> AsyncIterator[dict]:
    pairs = key_values(build, stage, ins)
    for key, value in pairs:
        _set_env(stage.config, key, value)
    comment = "ENV " + " ".join(f"{k}={v}" for k, v in pairs)
    async for message in metadata_step(build, stage, comment):
        yield message


async def handle_label(build: Build, stage: Stage,
                       ins: instructions.Instruction) -> AsyncIterator[dict]:
    pairs = key_values(build, stage, ins)
    stage.config.labels.update(pairs)
    comment = "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
    async for message in metadata_step(build, stage, comment):
        yield message


async def handle_maintainer(build: Build, stage: Stage,
                            ins: instructions.Instruction) -> AsyncIterator[dict]:
    stage.author = " ".join(ins.args)
    async for message in metadata_step(build, stage, "MAINTAINER " + stage.author):
        yield message


async def handle_expose(build: Build, stage: Stage,
                        ins: instructions.Instruction) -> AsyncIterator[dict]:
    specs = [p for arg in ins.args
             for p in process_words(arg, build.env_for_words(stage), build.dockerfile.escape)]
    ports = list(stage.config.exposed_ports)
    for spec in specs:
        ports += [p for p in _expose_ports(spec) if p not in ports]
    del stage.config.exposed_ports[:]
    stage.config.exposed_ports.extend(sorted(ports))
    async for message in metadata_step(build, stage, "EXPOSE " + " ".join(specs)):
        yield message


async def handle_user(build: Build, stage: Stage,
                      ins: instructions.Instruction) -> AsyncIterator[dict]:
    stage.config.user = build.word(stage, ins.args[0])
    async for message in metadata_step(build, stage, "USER " + stage.config.user):
        yield message


async def handle_stopsignal(build: Build, stage: Stage,
                            ins: instructions.Instruction) -> AsyncIterator[dict]:
    stage.config.stop_signal = build.word(stage, ins.args[0])
    async for message in metadata_step(build, stage, "STOPSIGNAL " + stage.config.stop_signal):
        yield message


async def handle_volume(build: Build, stage: Stage,
                        ins: instructions.Instruction) -> AsyncIterator[dict]:
    volumes = [build.word(stage, v) for v in ins.args]
    if any(not v.strip() for v in volumes):
        raise InvalidArgument("VOLUME specified can not be an empty string")
    for volume in volumes:
        if volume not in stage.config.volumes:
            stage.config.volumes.append(volume)
    async for message in metadata_step(build, stage, f"VOLUME [{' '.join(volumes)}]"):
        yield message


def command_line(build: Build, stage: Stage, ins: instructions.Instruction) -> list[str]:
    if ins.json:
        return list(ins.args)
    return [*(stage.config.shell or DEFAULT_SHELL), ins.args[0]]


async def handle_cmd(build: Build, stage: Stage,
                     ins: instructions.Instruction) -> AsyncIterator[dict]:
    cmd = command_line(build, stage, ins)
    stage.config.cmd.CopyFrom(types_pb2.StringList(values=cmd))
    stage.cmd_set = True
    async for message in metadata_step(build, stage, "CMD " + go_quote_list(cmd)):
        yield message


async def handle_entrypoint(build: Build, stage: Stage,
                            ins: instructions.Instruction) -> AsyncIterator[dict]:
    entrypoint = command_line(build, stage, ins)
    stage.config.entrypoint.CopyFrom(types_pb2.StringList(values=entrypoint))
    if not stage.cmd_set:
        stage.config.ClearField("cmd")
    async for message in metadata_step(build, stage, "ENTRYPOINT " + go_quote_list(entrypoint)):
        yield message


async def handle_shell(build: Build, stage: Stage,
                       ins: instructions.Instruction) -> AsyncIterator[dict]:
    del stage.config.shell[:]
    stage.config.shell.extend(ins.args)
    async for message in metadata_step(build, stage, "SHELL " + go_quote_list(ins.args)):
        yield message


async def handle_onbuild(build: Build, stage: Stage,
                         ins: instructions.Instruction) -> AsyncIterator[dict]:
    stage.config.on_build.append(ins.args[0])
    async for message in metadata_step(build, stage, "ONBUILD " + ins.args[0]):
        yield message


async def handle_healthcheck(build: Build, stage: Stage,
                             ins: instructions.Instruction) -> AsyncIterator[dict]:
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
    async for message in metadata_step(build,
            stage, "HEALTHCHECK &{" + go_quote_list(list(check.test.values)) + "}"):
        yield message


async def handle_arg(build: Build, stage: Stage,
                     ins: instructions.Instruction) -> AsyncIterator[dict]:
    name, sep, default = ins.args[0].partition("=")
    build.used_args.add(name)
    if name in build.options.build_args:
        value: str | None = build.options.build_args[name]
    elif sep:
        value = build.word(stage, default)
    else:
        value = build.meta_args.get(name)
    stage.args[name] = value
    async for message in metadata_step(build, stage, "ARG " + ins.args[0]):
        yield message


async def handle_workdir(build: Build, stage: Stage,
                         ins: instructions.Instruction) -> AsyncIterator[dict]:
    path = build.word(stage, ins.args[0])
    workdir = posixpath.normpath(posixpath.join(stage.config.working_dir or "/", path))
    stage.config.working_dir = workdir
    created_by = [*DEFAULT_SHELL, f"#(nop) WORKDIR {workdir}"]
    key = build.step_key(stage, created_by)
    if await build.reuse(stage, key, created_by):
        yield USING_CACHE
        return
    parent = build.view(stage.image_id)
    if await parent.is_dir(workdir):
        await build.commit(stage, created_by, key)
        return
    with build.builder.scratch_file() as layer:
        await asyncio.to_thread(_write_workdir_layer, layer, parent, workdir)
        await build.commit(stage, created_by, key, layer, layer.stat().st_size)


def _write_workdir_layer(layer: Path, parent: ImageFiles, workdir: str) -> None:
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        copier.LayerWriter(tar, parent.exists_from_thread, copier.Owner()).directory(workdir)


async def handle_add(build: Build, stage: Stage,
                     ins: instructions.Instruction) -> AsyncIterator[dict]:
    for src in ins.args[:-1]:
        if re.match(r"^(https?|git)://|^git@", src):
            raise InvalidArgument(f"ADD failed: source {src} is a URL; this engine has no "
                                  "remote downloads, put the file in the build context")
    async for message in handle_copy(build, stage, ins):
        yield message


async def source_image(build: Build, stage: Stage, source: str) -> str | None:
    """The image COPY --from names (an earlier stage or any image), None
    for the build context."""
    if not source:
        return None
    earlier = {s.name: s for s in build.stages[:-1] if s.name}
    if source.lower() in earlier:
        return earlier[source.lower()].image_id
    if source.isdigit():
        index = int(source)
        if index >= stage.index:
            raise InvalidArgument(f"invalid from flag value {source}: refers to current "
                                  "build stage" if index == stage.index else
                                  f"invalid from flag value {source}: stage not found")
        return build.stages[index].image_id
    image = None
    try:
        async for item in build.base_image(source, build.options.platform, build.new_hold()):
            if isinstance(item, image_pb2.Image):
                image = item
    except BerthError as exc:
        raise InvalidArgument(f"invalid from flag value {source}: {exc.message}") from exc
    assert image is not None
    return image.id


async def read_sources(tree: copier.SourceTree, sources: list[str], dest: str,
                       instruction: str) -> copier.CopySources:
    located = await copier.locate(tree, sources, instruction)
    return await asyncio.to_thread(copier.read_sources, located, dest, instruction,
                                   tree.digests)


def copy_history(instruction: str, copy: copier.CopySources, dest: str) -> list[str]:
    return [*DEFAULT_SHELL, f"#(nop) {instruction} {copy.kind}:{copy.digest} in {dest} "]


async def chown_owner(spec: str, parent: ImageFiles) -> copier.Owner:
    """--chown's owner; names are looked up in the parent image's
    /etc/passwd and /etc/group, the only files fetched for it."""
    user_named, group_named = copier.chown_names(spec)
    passwd = await parent.read_text("/etc/passwd") if user_named else ""
    group = await parent.read_text("/etc/group") if group_named else ""
    return copier.parse_chown(spec, passwd, group)


async def handle_copy(build: Build, stage: Stage,
                      ins: instructions.Instruction) -> AsyncIterator[dict]:
    """The cache key needs nothing from an image: the context's sources by
    their digest, an image's by the image (content addressed) and their
    names; the parent image is in every key, so where the destination
    lands and whose --chown names are need not be."""
    name = ins.name
    words = [build.word(stage, a) for a in ins.args]
    sources, dest = words[:-1], words[-1]
    chown = build.word(stage, ins.flags.get("chown", ""))
    chmod = copier.parse_chmod(ins.flags.get("chmod", ""), name)
    image_id = await source_image(build, stage, build.word(stage, ins.flags.get("from", "")))
    if image_id is None:
        copy = await read_sources(copier.ContextTree(build.ctx.root, build.ctx.digests),
                                  sources, dest, name)
        described = copy_history(name, copy, dest)
    else:
        described = [*DEFAULT_SHELL, f"#(nop) {name} --from={image_id} "
                                     f"{go_quote_list(sources)} in {dest} "]
    keep_owners = image_id is not None and not chown
    key = build.step_key(stage, described, f"{chown}|{chmod}|{keep_owners}")
    if await build.reuse(stage, key, described):
        yield USING_CACHE
        return
    if image_id is not None:
        copy = await read_sources(build.view(image_id), sources, dest, name)
    with build.builder.scratch_file() as layer:
        await write_copy_layer(layer, build.view(stage.image_id), copy,
                               copier.destination(dest, stage.config.working_dir),
                               names_dir=copier.names_directory(dest), chown=chown,
                               chmod=chmod, instruction=name, keep_owners=keep_owners)
        await build.commit(stage, copy_history(name, copy, dest), key, layer,
                           layer.stat().st_size)


async def write_copy_layer(layer: Path, parent: ImageFiles, copy: copier.CopySources,
                           target: str, names_dir: bool, chown: str, chmod: int | None,
                           instruction: str, keep_owners: bool = False) -> None:
    """The layer of a COPY/ADD into `target` of the parent image;
    `keep_owners`: the copied paths keep their owners (COPY --from)."""
    into_dir = names_dir or await parent.is_dir(target)
    entries = await asyncio.to_thread(copier.plan_copy, copy, target, into_dir, instruction)
    owner = None if keep_owners else await chown_owner(chown, parent)
    await asyncio.to_thread(_write_layer, layer, parent, owner, chmod, entries)


async def handle_run(build: Build, stage: Stage,
                     ins: instructions.Instruction) -> AsyncIterator[dict]:
    cmd = command_line(build, stage, ins)
    arg_env = build.build_arg_env(stage)
    declared = sorted(e for e in arg_env if e.split("=", 1)[0] in stage.args)
    saved = [f"|{len(declared)}", *declared, *cmd] if arg_env else cmd
    key = build.step_key(stage, saved)
    if await build.reuse(stage, key, saved):
        yield USING_CACHE
        return
    container_id, warnings = await build.peers.create_container(
        run_request(build, stage, cmd, arg_env))
    build.containers.append(container_id)
    build.builder.cache.hold("container", container_id)
    for warning in warnings:
        yield build.say(f" ---> [Warning] {warning}\n")
    yield build.say(f" ---> Running in {container_id[:12]}\n")
    exit_code = 0
    async for item in build.peers.run_container(container_id):
        if isinstance(item, int):
            exit_code = item
        else:
            yield build.say(item)
    if exit_code != 0:
        raise Internal(f"The command '{' '.join(cmd)}' returned a non-zero code: "
                       f"{exit_code}")
    hold = build.new_hold()
    step = container_pb2.BuildStep(config=stage.config, created_by=" ".join(saved),
                                   container_config=build.step_config(stage, saved), hold=hold)
    image_id = await build.peers.commit_step(container_id, stage.author, step)
    build.builder.cache.record(key, stage.image_id, image_id, " ".join(saved),
                              await added_size(build, stage.image_id, image_id))
    await build.settle(stage, image_id, hold.holder)
    if build.options.remove or build.options.force_remove:
        await build.peers.remove_container(container_id)
        yield build.say(f"Removing intermediate container {container_id[:12]}\n")
    build.containers.remove(container_id)
    build.builder.cache.let_go("container", container_id)


async def added_size(build: Build, parent: str, image_id: str) -> int:
    """Bytes a step's layer adds to its parent image."""
    image = await build.peers.inspect_image(image_id)
    base = await build.peers.inspect_image(parent) if parent else None
    return max(0, (image.size if image else 0) - (base.size if base else 0))


def image_config(stage: Stage) -> container_pb2.ContainerConfig:
    """The step's resulting image config in the container service's shape."""
    fields = json_format.MessageToDict(stage.config, preserving_proto_field_name=True)
    return json_format.ParseDict(fields, container_pb2.ContainerConfig(),
                                 ignore_unknown_fields=True)


def run_request(build: Build, stage: Stage, cmd: list[str], arg_env: list[str]
                ) -> container_pb2.CreateContainerRequest:
    config = image_config(stage)
    config.image = stage.image_id
    config.cmd.CopyFrom(types_pb2.StringList(values=cmd))
    config.entrypoint.CopyFrom(types_pb2.StringList())
    config.env.extend(arg_env)
    config.attach_stdout = config.attach_stderr = True
    config.ClearField("healthcheck")
    o = build.options
    host = container_pb2.HostConfig(
        network_mode=o.network_mode if o.network_mode not in ("", "default") else "",
        extra_hosts=o.extra_hosts, shm_size=o.shm_size,
        resources=container_pb2.Resources(
            memory=o.memory, memory_swap=o.memory_swap, cpu_shares=o.cpu_shares,
            cpu_period=o.cpu_period, cpu_quota=o.cpu_quota, cpuset_cpus=o.cpuset_cpus))
    return container_pb2.CreateContainerRequest(config=config, host_config=host)


def _write_layer(layer: Path, parent: ImageFiles, owner: copier.Owner | None,
                 chmod: int | None, entries: list[copier.Entry]) -> None:
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        writer = copier.LayerWriter(tar, parent.exists_from_thread, owner, chmod)
        for entry in entries:
            writer.add(entry)


Handler = Callable[["Build", "Stage", instructions.Instruction], AsyncIterator[dict]]

HANDLERS: dict[str, Handler] = {
    "ADD": handle_add,
    "ARG": handle_arg,
    "CMD": handle_cmd,
    "COPY": handle_copy,
    "ENTRYPOINT": handle_entrypoint,
    "ENV": handle_env,
    "EXPOSE": handle_expose,
    "HEALTHCHECK": handle_healthcheck,
    "LABEL": handle_label,
    "MAINTAINER": handle_maintainer,
    "ONBUILD": handle_onbuild,
    "RUN": handle_run,
    "SHELL": handle_shell,
    "STOPSIGNAL": handle_stopsignal,
    "USER": handle_user,
    "VOLUME": handle_volume,
    "WORKDIR": handle_workdir,
}
