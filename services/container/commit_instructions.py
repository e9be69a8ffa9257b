"""docker commit --change: the Dockerfile instructions allowed on commit,
applied to an image config."""

from __future__ import annotations

import shlex

import dockerfile

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from berth.types.v1 import types_pb2
from services.common import godur
from services.common.errors import InvalidArgument

ALLOWED = {"CMD", "ENTRYPOINT", "HEALTHCHECK", "ENV", "EXPOSE", "LABEL", "ONBUILD",
           "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}


def _unquote(value: str) -> str:
    try:
        words = shlex.split(value)
    except ValueError:
        return value
    return " ".join(words) if words else ""


def _command(command: dockerfile.Command, shell: list[str]) -> list[str]:
    if command.json:
        return list(command.value)
    return [*(shell or ["/bin/sh", "-c"]), " ".join(command.value)]


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(values[i], _unquote(values[i + 1])) for i in range(0, len(values) - 1, 2)]


def _set_env(config: container_pb2.ContainerConfig, key: str, value: str) -> None:
    kept = [e for e in config.env if e.partition("=")[0] != key]
    del config.env[:]
    config.env.extend([*kept, f"{key}={value}"])


def _healthcheck(command: dockerfile.Command) -> image_pb2.HealthConfig:
    if command.value and command.value[0].upper() == "NONE":
        return image_pb2.HealthConfig(test=_string_list(["NONE"]))
    if not command.value or command.value[0].upper() != "CMD":
        raise InvalidArgument("Unknown type in HEALTHCHECK (try CMD)")
    health = image_pb2.HealthConfig()
    for flag in command.flags:
        name, _, value = flag.lstrip("-").partition("=")
        if name == "retries":
            health.retries = int(value)
        elif name in ("interval", "timeout", "start-period", "start-interval"):
            setattr(health, name.replace("-", "_") + "_ns", godur.parse_ns(value))
        else:
            raise InvalidArgument(f"Unknown flag: {name}")
    rest = command.original.split(None, 1)[1]
    rest = rest[rest.upper().index("CMD") + 3:].strip()
    if rest.startswith("["):
        health.test.values.extend(["CMD", *command.value[1:]])
    else:
        health.test.values.extend(["CMD-SHELL", rest])
    return health


def _string_list(values: list[str]) -> types_pb2.StringList:
    return types_pb2.StringList(values=values)


def apply_changes(config: container_pb2.ContainerConfig, changes: list[str]) -> None:
    """Apply Dockerfile instructions (one or more per entry) to `config`."""
    for text in changes:
        try:
            commands = dockerfile.parse_string(text)
        except dockerfile.GoParseError as exc:
            raise InvalidArgument(str(exc)) from exc
        for command in commands:
            _apply(config, command)


def _apply(config: container_pb2.ContainerConfig, command: dockerfile.Command) -> None:
    name = command.cmd.upper()
    if name not in ALLOWED:
        raise InvalidArgument(f"{name.lower()} is not a valid change command")
    values = command.value
    if name == "CMD":
        config.cmd.CopyFrom(_string_list(_command(command, list(config.shell))))
    elif name == "ENTRYPOINT":
        config.entrypoint.CopyFrom(_string_list(_command(command, list(config.shell))))
    elif name == "ENV":
        for key, value in _pairs(values):
            _set_env(config, key, value)
    elif name == "LABEL":
        for key, value in _pairs(values):
            config.labels[_unquote(key)] = value
    elif name == "EXPOSE":
        for port in values:
            spec = port if "/" in port else f"{port}/tcp"
            if spec not in config.exposed_ports:
                config.exposed_ports.append(spec)
    elif name == "VOLUME":
        for volume in values:
            if volume not in config.volumes:
                config.volumes.append(volume)
    elif name == "USER":
        config.user = values[0]
    elif name == "WORKDIR":
        config.working_dir = values[0]
    elif name == "STOPSIGNAL":
        config.stop_signal = values[0]
    elif name == "ONBUILD":
        config.on_build.append(command.original.split(None, 1)[1])
    elif name == "HEALTHCHECK":
        config.healthcheck.CopyFrom(_healthcheck(command))
