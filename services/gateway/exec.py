"""Docker API routes for exec instances: route table plus handlers over gRPC."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from berth.container.v1 import container_pb2 as pb
from services.gateway.backends import Backends
from services.gateway.errors import bad_request
from services.gateway.hijack import hijack, relay
from services.gateway.params import Fields, json_body, terminal_size
from services.gateway.routing import Route


def routes(backends: Backends) -> list[Route]:
    handlers = ExecHandlers(backends)
    return [
        Route("POST", "/containers/{id}/exec", handlers.create),
        Route("POST", "/exec/{id}/start", handlers.start),
        Route("POST", "/exec/{id}/resize", handlers.resize),
        Route("GET", "/exec/{id}/json", handlers.inspect),
    ]


def _console_size(body: Fields) -> list[int]:
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
        working_dir=body.string("WorkingDir"), console_size=_console_size(body))


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


class ExecHandlers:
    def __init__(self, backends: Backends) -> None:
        self.container = backends.container

    async def create(self, request: web.Request) -> web.Response:
        config = exec_config(await json_body(request, "container.ExecOptions"))
        if not config.cmd:
            raise bad_request("No exec command specified")
        reply = await self.container.ExecCreate(
            pb.ExecCreateRequest(container_id=request.match_info["id"], config=config))
        return web.json_response({"Id": reply.id}, status=201)

    async def start(self, request: web.Request) -> web.StreamResponse:
        body = await json_body(request, "container.ExecStartOptions")
        exec_id = request.match_info["id"]
        options = pb.ExecStartOptions(exec_id=exec_id, detach=body.boolean("Detach"),
                                      tty=body.boolean("Tty"), console_size=_console_size(body))
        instance = await self.container.ExecInspect(pb.ExecInspectRequest(exec_id=exec_id))
        call = self.container.ExecStart()
        await call.write(pb.ExecStartRequest(options=options))
        if options.detach:
            await call.done_writing()
            async for _ in call:
                pass
            return web.Response(status=200)
        stdin = instance.config.attach_stdin
        connection = await hijack(request, multiplexed=not (options.tty or instance.config.tty))
        await relay(connection, call, (lambda data: pb.ExecStartRequest(stdin=data))
                    if stdin else None, pb.ExecStartRequest(close_stdin=True))
        return connection.response

    async def resize(self, request: web.Request) -> web.Response:
        await self.container.ExecResize(pb.ExecResizeRequest(
            exec_id=request.match_info["id"], **terminal_size(request)))
        return web.Response(status=200)

    async def inspect(self, request: web.Request) -> web.Response:
        instance = await self.container.ExecInspect(
            pb.ExecInspectRequest(exec_id=request.match_info["id"]))
        return web.json_response(inspect_json(instance))
