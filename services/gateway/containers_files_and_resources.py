"""Docker API routes that look inside a container: archive (docker cp), top,
stats, changes (docker diff), export, update and commit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from berth.container.v1 import container_pb2 as pb
from services.common.errors import BerthError, NotFound, PeerUnavailable
from services.common.peers import PeerStream
from services.gateway.backends import Backends
from services.gateway.convert.container_create import (
    container_config,
    resources,
    restart_policy,
)
from services.gateway.convert.container_stats import path_stat_header, stats_json
from services.gateway.errors import bad_request
from services.gateway.params import boolean, json_body
from services.gateway.routing import Route
from services.gateway.streams import body_chunks

PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"
TAR = "application/x-tar"


def routes(backends: Backends) -> list[Route]:
    handlers = InsideHandlers(backends)
    return [
        Route("HEAD", "/containers/{id}/archive", handlers.stat_path),
        Route("GET", "/containers/{id}/archive", handlers.get_archive),
        Route("PUT", "/containers/{id}/archive", handlers.put_archive),
        Route("GET", "/containers/{id}/top", handlers.top),
        Route("GET", "/containers/{id}/stats", handlers.stats),
        Route("GET", "/containers/{id}/changes", handlers.changes),
        Route("GET", "/containers/{id}/export", handlers.export),
        Route("POST", "/containers/{id}/update", handlers.update),
        Route("POST", "/commit", handlers.commit),
    ]


def _required_path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if not path:
        raise bad_request("Bad parameter: 'path' cannot be empty")
    return path


async def _first(call: PeerStream) -> tuple[AsyncIterator[Any], Any]:
    """The stream's first message (errors before any output keep their status)."""
    iterator = aiter(call)
    try:
        return iterator, await anext(iterator)
    except StopAsyncIteration:
        return iterator, None


async def _send_tar(request: web.Request, call: PeerStream, first: Any,
                    iterator: AsyncIterator[Any], headers: dict[str, str] | None = None
                    ) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=headers or {})
    response.content_type = TAR
    await response.prepare(request)
    try:
        if first is not None and first.data:
            await response.write(first.data)
        async for chunk in iterator:
            await response.write(chunk.data)
        await response.write_eof()
    except (ConnectionError, BerthError):
        # Past the headers an error can only cut the tar short, as Docker does.
        if request.transport is not None:
            request.transport.close()
    finally:
        call.cancel()
    return response


class InsideHandlers:
    def __init__(self, backends: Backends) -> None:
        self.container = backends.container

    def _path_request(self, request: web.Request) -> pb.PathRequest:
        return pb.PathRequest(id=request.match_info["id"], path=_required_path(request))

    async def stat_path(self, request: web.Request) -> web.Response:
        try:
            stat = await self.container.StatPath(self._path_request(request))
        except PeerUnavailable:
            raise
        except BerthError as exc:
            # HEAD answers carry no body; the status says it all.
            return web.Response(status=404 if isinstance(exc, NotFound) else 400)
        return web.Response(status=200, headers={PATH_STAT_HEADER: path_stat_header(stat)})

    async def get_archive(self, request: web.Request) -> web.StreamResponse:
        call = self.container.GetArchive(self._path_request(request))
        iterator, first = await _first(call)
        headers = {PATH_STAT_HEADER: path_stat_header(first.stat)} if first else {}
        return await _send_tar(request, call, first, iterator, headers)

    async def put_archive(self, request: web.Request) -> web.Response:
        options = pb.PutArchiveOptions(
            id=request.match_info["id"], path=_required_path(request),
            no_overwrite_dir_non_dir=boolean(request, "noOverwriteDirNonDir"),
            copy_uid_gid=boolean(request, "copyUIDGID"))

        async def messages() -> AsyncIterator[pb.PutArchiveRequest]:
            yield pb.PutArchiveRequest(options=options)
            async for chunk in body_chunks(request):
                yield pb.PutArchiveRequest(data=chunk)

        await self.container.PutArchive(messages())
        return web.Response(status=200)

    async def top(self, request: web.Request) -> web.Response:
        reply = await self.container.Top(pb.TopRequest(
            id=request.match_info["id"], ps_args=request.query.get("ps_args", "")))
        return web.json_response({"Titles": list(reply.titles),
                                  "Processes": [list(row.values) for row in reply.processes]})

    async def stats(self, request: web.Request) -> web.StreamResponse:
        stream = boolean(request, "stream", default=True)
        call = self.container.Stats(pb.StatsRequest(
            id=request.match_info["id"], stream=stream, one_shot=boolean(request, "one-shot")))
        iterator, first = await _first(call)
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(json.dumps(stats_json(first)).encode() + b"\n")
            async for message in iterator:
                await response.write(json.dumps(stats_json(message)).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, BerthError):
            pass
        finally:
            call.cancel()
        return response

    async def changes(self, request: web.Request) -> web.Response:
        reply = await self.container.Changes(pb.ContainerRef(id=request.match_info["id"]))
        return web.json_response(
            [{"Path": c.path, "Kind": c.kind} for c in reply.changes] or None)

    async def export(self, request: web.Request) -> web.StreamResponse:
        call = self.container.Export(pb.ContainerRef(id=request.match_info["id"]))
        iterator, first = await _first(call)
        return await _send_tar(request, call, first, iterator)

    async def update(self, request: web.Request) -> web.Response:
        body = await json_body(request, "container.UpdateConfig")
        update = pb.UpdateContainerRequest(id=request.match_info["id"],
                                           resources=resources(body))
        if policy := body.object("RestartPolicy", "container.RestartPolicy"):
            update.restart_policy.CopyFrom(restart_policy(policy))
        reply = await self.container.Update(update)
        return web.json_response({"Warnings": list(reply.warnings) or None})

    async def commit(self, request: web.Request) -> web.Response:
        body = await json_body(request, "container.Config")
        container = request.query.get("container", "")
        if not container:
            raise bad_request("No container specified")
        commit = pb.CommitRequest(
            container_id=container, repo=request.query.get("repo", ""),
            tag=request.query.get("tag", ""), comment=request.query.get("comment", ""),
            author=request.query.get("author", ""), pause=boolean(request, "pause", True),
            changes=[c for c in request.query.getall("changes", []) if c])
        if body:
            commit.config.CopyFrom(container_config(body))
        reply = await self.container.Commit(commit)
        return web.json_response({"Id": reply.id}, status=201)
