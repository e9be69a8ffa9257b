"""Docker API routes for exec instances: route table plus handlers over gRPC."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from berth.container.v1 import container_pb2 as pb
from services.gateway.backends import Backends
from services.gateway.errors import bad_request, read_json
from services.gateway.hijack import hijack, relay
from services.gateway.params import integer
from services.gateway.routing import Route


def routes(backends: Backends) -> list[Route]:
    handlers = ExecHandlers(backends)
    return [
        Route("POST", "/containers/{id}/exec", handlers.create),
        Route("POST", "/exec/{id}/start", handlers.start),
        Route("POST", "/exec/{id}/resize", handlers.resize),
        Route("GET", "/exec/{id}/json", handlers.inspect),
    ]


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{field} must be a list of strings")
    return value


def _console_size(value: Any) -> list[int]:
    if not value:
        return []
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and v >= 0 for v in value)):
        raise bad_request("ConsoleSize must be an array of two unsigned integers")
    return value


def exec_config(body: dict[str, Any]) -> pb.ExecConfig:
    return pb.ExecConfig(
        attach_stdin=bool(body.get("AttachStdin")), attach_stdout=bool(body.get("AttachStdout")),
        attach_stderr=bool(body.get("AttachStderr")), detach_keys=body.get("DetachKeys") or "",
        tty=bool(body.get("Tty")), env=_strings(body.get("Env"), "Env"),
        cmd=_strings(body.get("Cmd"), "Cmd"), privileged=bool(body.get("Privileged")),
        user=body.get("User") or "", working_dir=body.get("WorkingDir") or "",
        console_size=_console_size(body.get("ConsoleSize")))


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
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("malformed JSON body")
        config = exec_config(body)
        if not config.cmd:
            raise bad_request("No exec command specified")
        reply = await self.container.ExecCreate(
            pb.ExecCreateRequest(container_id=request.match_info["id"], config=config))
        return web.json_response({"Id": reply.id}, status=201)

    async def start(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        exec_id = request.match_info["id"]
        instance = await self.container.ExecInspect(pb.ExecInspectRequest(exec_id=exec_id))
        options = pb.ExecStartOptions(exec_id=exec_id, detach=bool(body.get("Detach")),
                                      tty=bool(body.get("Tty")),
                                      console_size=_console_size(body.get("ConsoleSize")))
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
            exec_id=request.match_info["id"], height=integer(request, "h"),
            width=integer(request, "w")))
        return web.Response(status=200)

    async def inspect(self, request: web.Request) -> web.Response:
        instance = await self.container.ExecInspect(
            pb.ExecInspectRequest(exec_id=request.match_info["id"]))
        return web.json_response(inspect_json(instance))
