"""Docker API routes for containers: route table plus handlers over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from aiohttp import WSMsgType, web

from berth.container.v1 import container_pb2 as pb
from services.common.errors import BerthError
from services.common.peers import PeerStream
from services.gateway.backends import Backends
from services.gateway.convert.container_create import CREATE_REQUEST, create_request
from services.gateway.convert.container_view import inspect_json, summary_json, wait_body
from services.gateway.errors import HTTPError, bad_request
from services.gateway.hijack import MULTIPLEXED_STREAM, RAW_STREAM, frame_header, hijack, relay
from services.gateway.params import (
    api_version,
    boolean,
    filters,
    integer,
    json_body,
    terminal_size,
    timestamp,
)
from services.gateway.routing import Route
from services.gateway.streams import cancelled_when_client_leaves

WAIT_CONDITIONS = ("", "not-running", "next-exit", "removed")


def routes(backends: Backends) -> list[Route]:
    handlers = ContainerHandlers(backends)
    return [
        Route("GET", "/containers/json", handlers.list),
        Route("POST", "/containers/create", handlers.create),
        Route("POST", "/containers/prune", handlers.prune),
        Route("GET", "/containers/{id}/json", handlers.inspect),
        Route("POST", "/containers/{id}/start", handlers.start),
        Route("POST", "/containers/{id}/stop", handlers.stop),
        Route("POST", "/containers/{id}/restart", handlers.restart),
        Route("POST", "/containers/{id}/kill", handlers.kill),
        Route("POST", "/containers/{id}/pause", handlers.pause),
        Route("POST", "/containers/{id}/unpause", handlers.unpause),
        Route("POST", "/containers/{id}/wait", handlers.wait),
        Route("POST", "/containers/{id}/rename", handlers.rename),
        Route("POST", "/containers/{id}/resize", handlers.resize),
        Route("GET", "/containers/{id}/logs", handlers.logs),
        Route("POST", "/containers/{id}/attach", handlers.attach),
        Route("GET", "/containers/{id}/attach/ws", handlers.attach_ws),
        # A legacy link's name has slashes: /containers//parent/alias?link=1.
        Route("DELETE", "/containers/{id:.+}", handlers.remove),
    ]


def _no_content(status: int = 204) -> web.Response:
    return web.Response(status=status)


def _optional_timeout(request: web.Request) -> dict[str, Any]:
    """?t= as the optional timeout field (absent: the container's own)."""
    if request.query.get("t", "") == "":
        return {}
    return {"timeout": integer(request, "t", go_type="int32")}


def log_timestamp(time_nano: int) -> bytes:
    """Docker's fixed-width RFC 3339 timestamp that prefixes log lines."""
    seconds, nanos = divmod(time_nano, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z ".encode()


def details_prefix(attrs: Mapping[str, str]) -> bytes:
    """`docker logs --details`: the attributes sorted by key, query-escaped
    as Go's url.QueryEscape does, then a space."""
    pairs = ",".join(f"{quote_plus(key)}={quote_plus(value)}"
                     for key, value in sorted(attrs.items()))
    return pairs.encode() + b" "


class ContainerHandlers:
    def __init__(self, backends: Backends) -> None:
        self.backends = backends
        self.container = backends.container

    async def create(self, request: web.Request) -> web.Response:
        body = await json_body(request, CREATE_REQUEST)
        message = create_request(request.query.get("name", ""),
                                 request.query.get("platform", ""), body, api_version(request))
        created = await self.container.Create(message)
        return web.json_response({"Id": created.id, "Warnings": list(created.warnings)},
                                 status=201)

    async def inspect(self, request: web.Request) -> web.Response:
        container = await self.container.Inspect(pb.InspectContainerRequest(
            id=request.match_info["id"], size=boolean(request, "size")))
        return web.json_response(inspect_json(container, api_version(request)))

    async def list(self, request: web.Request) -> web.Response:
        size = boolean(request, "size")
        wanted = filters(request)
        # Older clients (docker-py too) pass these as query parameters.
        for key in ("since", "before"):
            if request.query.get(key):
                wanted.filters[key].values.append(request.query[key])
        listed = await self.container.List(pb.ListContainersRequest(
            all=boolean(request, "all"), limit=integer(request, "limit", go_type="int32"),
            size=size, filters=wanted))
        version = api_version(request)
        return web.json_response([summary_json(c, version, size) for c in listed.containers])

    async def start(self, request: web.Request) -> web.Response:
        started = await self.container.Start(pb.StartContainerRequest(
            id=request.match_info["id"]))
        return _no_content(304 if started.already_running else 204)

    async def stop(self, request: web.Request) -> web.Response:
        stopped = await self.container.Stop(pb.StopContainerRequest(
            id=request.match_info["id"], signal=request.query.get("signal", ""),
            **_optional_timeout(request)))
        return _no_content(304 if stopped.already_stopped else 204)

    async def restart(self, request: web.Request) -> web.Response:
        await self.container.Restart(pb.RestartContainerRequest(
            id=request.match_info["id"], signal=request.query.get("signal", ""),
            **_optional_timeout(request)))
        return _no_content()

    async def kill(self, request: web.Request) -> web.Response:
        await self.container.Kill(pb.KillContainerRequest(
            id=request.match_info["id"], signal=request.query.get("signal", "")))
        return _no_content()

    async def pause(self, request: web.Request) -> web.Response:
        await self.container.Pause(pb.ContainerRef(id=request.match_info["id"]))
        return _no_content()

    async def unpause(self, request: web.Request) -> web.Response:
        await self.container.Unpause(pb.ContainerRef(id=request.match_info["id"]))
        return _no_content()

    async def rename(self, request: web.Request) -> web.Response:
        await self.container.Rename(pb.RenameContainerRequest(
            id=request.match_info["id"], name=request.query.get("name", "")))
        return _no_content()

    async def remove(self, request: web.Request) -> web.Response:
        if boolean(request, "link"):
            await self.container.RemoveLink(pb.RemoveLinkRequest(name=request.match_info["id"]))
            return _no_content()
        await self.container.Remove(pb.RemoveContainerRequest(
            id=request.match_info["id"], force=boolean(request, "force"),
            remove_volumes=boolean(request, "v")))
        return _no_content()

    async def prune(self, request: web.Request) -> web.Response:
        pruned = await self.container.Prune(pb.PruneContainersRequest(
            filters=filters(request)))
        return web.json_response({"ContainersDeleted": list(pruned.deleted) or None,
                                  "SpaceReclaimed": pruned.space_reclaimed})

    async def resize(self, request: web.Request) -> web.Response:
        await self.container.Resize(pb.ResizeRequest(
            id=request.match_info["id"], **terminal_size(request)))
        return web.Response(status=200)

    async def wait(self, request: web.Request) -> web.StreamResponse:
        condition = request.query.get("condition", "")
        if condition not in WAIT_CONDITIONS:
            raise bad_request(f'invalid condition: "{condition}"')
        call = self.container.Wait(pb.WaitContainerRequest(
            id=request.match_info["id"], condition=condition))
        messages = aiter(call)
        try:
            # Errors before registration (no such container) keep their status.
            await anext(messages)
            response = web.StreamResponse(status=200)
            response.content_type = "application/json"
            await response.prepare(request)
            try:
                result = await anext(messages)
                body = wait_body(result.status_code, result.error)
            except (BerthError, StopAsyncIteration) as exc:
                body = wait_body(-1, str(exc) or "wait ended unexpectedly")
            with contextlib.suppress(ConnectionError):
                await response.write(json.dumps(body).encode() + b"\n")
                await response.write_eof()
            return response
        finally:
            call.cancel()

    async def _tty(self, container_id: str) -> bool:
        container = await self.container.Inspect(pb.InspectContainerRequest(id=container_id))
        return container.config.tty

    async def logs(self, request: web.Request) -> web.StreamResponse:
        stdout, stderr = boolean(request, "stdout"), boolean(request, "stderr")
        if not (stdout or stderr):
            raise bad_request("Bad parameters: you must choose at least one stream")
        now = time.time_ns()
        container = await self.container.Inspect(pb.InspectContainerRequest(
            id=request.match_info["id"]))
        if container.host_config.log_config.type == "none":
            # Checked before the headers go out, for Docker's status and message.
            raise HTTPError(501, "configured logging driver does not support reading")
        tty = container.config.tty
        timestamps = boolean(request, "timestamps")
        details = boolean(request, "details")
        call = self.container.Logs(pb.LogsRequest(
            id=request.match_info["id"], follow=boolean(request, "follow"),
            stdout=stdout, stderr=stderr,
            since_nano=timestamp(request, "since", now),
            until_nano=timestamp(request, "until", now),
            tail=request.query.get("tail", "") or "all",
            details=details))
        response = web.StreamResponse(status=200)
        response.content_type = RAW_STREAM if tty else MULTIPLEXED_STREAM
        await response.prepare(request)
        try:
            with cancelled_when_client_leaves(request, call):
                async for entry in call:
                    # The gateway prefixes the timestamps, so the service sends bare lines.
                    data = ((log_timestamp(entry.time_nano) if timestamps else b"")
                        + (details_prefix(entry.attrs) if details else b"") + entry.data)
                    if not tty:
                        data = frame_header(entry.stream + 1, len(data)) + data
                    await response.write(data)
            await response.write_eof()
        except BerthError as exc:
            # Headers are out; Docker ends the stream with the error text.
            with contextlib.suppress(ConnectionError):
                await response.write(f"Error: {exc}\n".encode())
                await response.write_eof()
        except ConnectionError:
            pass  # the client went away; cancelling the call stops the service's stream
        finally:
            call.cancel()
        return response

    async def _open_attach(self, request: web.Request) -> tuple[PeerStream, bool]:
        """Check the container (errors keep their status), then open the attach
        call; returns it and whether the container has a TTY."""
        container_id = request.match_info["id"]
        tty = await self._tty(container_id)
        options = pb.AttachOptions(
            id=container_id, stdin=boolean(request, "stdin"), stdout=boolean(request, "stdout"),
            stderr=boolean(request, "stderr"), stream=boolean(request, "stream"),
            logs=boolean(request, "logs"), detach_keys=request.query.get("detachKeys", ""))
        call = self.container.Attach()
        await call.write(pb.AttachRequest(options=options))
        # The service answers `attached` once the session is registered: only
        # then may the client start the container, and errors keep their status.
        try:
            await anext(aiter(call))
        except StopAsyncIteration:
            raise HTTPError(500, "the container service ended the attach") from None
        except BaseException:
            call.cancel()
            raise
        return call, tty

    async def attach(self, request: web.Request) -> web.StreamResponse:
        call, tty = await self._open_attach(request)
        stdin = boolean(request, "stdin")
        connection = await hijack(request, multiplexed=not tty)
        await relay(connection, call,
                    (lambda data: pb.AttachRequest(stdin=data)) if stdin else None,
                    pb.AttachRequest(close_stdin=True))
        return connection.response

    async def attach_ws(self, request: web.Request) -> web.StreamResponse:
        """Attach over a WebSocket: raw output (binary frames from API 1.42,
        text before), each client message is stdin."""
        call, _ = await self._open_attach(request)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        binary = api_version(request) >= (1, 42)
        forward_stdin = boolean(request, "stdin")

        async def pump_stdin() -> None:
            async for message in socket:
                if not forward_stdin:
                    continue
                if message.type == WSMsgType.BINARY:
                    await call.write(pb.AttachRequest(stdin=message.data))
                elif message.type == WSMsgType.TEXT:
                    await call.write(pb.AttachRequest(stdin=message.data.encode()))

        stdin_task = asyncio.create_task(pump_stdin())
        try:
            async for frame in call:
                if binary:
                    await socket.send_bytes(frame.data)
                else:
                    await socket.send_str(frame.data.decode(errors="replace"))
        except (ConnectionError, BerthError):
            pass
        finally:
            call.cancel()
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stdin_task
            await socket.close()
        return socket
