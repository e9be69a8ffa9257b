"""Docker API routes for exec instances: route table plus handlers over gRPC."""

from __future__ import annotations

from aiohttp import web

from berth.container.v1 import container_pb2 as pb
from services.gateway.backends import Backends
from services.gateway.convert.exec import console_size, exec_config, inspect_json
from services.gateway.errors import bad_request
from services.gateway.hijack import hijack, relay
from services.gateway.params import json_body, terminal_size
from services.gateway.routing import Route


def routes(backends: Backends) -> list[Route]:
    handlers = ExecHandlers(backends)
    return [
        Route("POST", "/containers/{id}/exec", handlers.create),
        Route("POST", "/exec/{id}/start", handlers.start),
        Route("POST", "/exec/{id}/resize", handlers.resize),
        Route("GET", "/exec/{id}/json", handlers.inspect),
    ]


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
                                      tty=body.boolean("Tty"), console_size=console_size(body))
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
