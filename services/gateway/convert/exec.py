"""The exec create and start bodies as requests, and Docker's exec inspect JSON."""

from __future__ import annotations

from typing import Any

from berth.container.v1 import container_pb2 as pb
from services.gateway.errors import bad_request
from services.gateway.params import Fields


def console_size(body: Fields) -> list[int]:
    size = body.integers("ConsoleSize", "uint32")
    if size and len(size) != 2:
        raise bad_request("ConsoleSize must be an array of two unsigned integers")
    return size


def exec_config(body: Fields) -> pb.ExecConfig:
    return pb.ExecConfig(
        attach_stdin=body.boolean("AttachStdin"), attach_stdout=body.boolean("AttachStdout"),
        attach_stderr=body.boolean("AttachStderr"), detach_keys=body.string("DetachKeys"),
        tty=body.boolean("Tty"), env=body.strings("Env"), cmd=body.strings("Cmd"),
        privileged=body.boolean("Privileged"), user=body.string("User"),
        working_dir=body.string("WorkingDir"), console_size=console_size(body))


def inspect_json(instance: pb.ExecInstance) -> dict[str, Any]:
    config = instance.config
    return {
        "CanRemove": instance.can_remove,
        "ContainerID": instance.container_id,
        "DetachKeys": instance.detach_keys,
        "ExitCode": instance.exit_code if instance.HasField("exit_code") else None,
        "ID": instance.id,
        "OpenStderr": instance.open_stderr,
        "OpenStdin": instance.open_stdin,
        "OpenStdout": instance.open_stdout,
        "ProcessConfig": {
            "arguments": list(config.cmd[1:]),
            "entrypoint": config.cmd[0] if config.cmd else "",
            "privileged": config.privileged,
            "tty": config.tty,
            **({"user": config.user} if config.user else {}),
        },
        "Running": instance.running,
        "Pid": instance.pid,
    }
