"""The classic builder: a build's context unpacked, its Dockerfile parsed
and its steps run (services.builder.steps), the result tagged, nothing left
behind; and the scratch space, cache index and crash recovery all builds share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from docker.utils.build import match_tag

from services.builder import context as build_context
from services.builder import instructions
from services.builder.metrics import BUILDS
from services.builder.options import BuildOptions
from services.builder.peers import Peers
from services.builder.steps import Build
from services.builder.store import CacheStore
from services.common.errors import BerthError, InvalidArgument


class Builder:
    """Runs builds; owns the cache index and the scratch space."""

    def __init__(self, peers: Peers, cache: CacheStore, workdir: Path) -> None:
        self.peers = peers
        self.cache = cache
        self.workdir = workdir
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        self.contexts = build_context.ContextCache(workdir)
        self.running: set[Build] = set()
        # Called when the image service missed a release (services.builder.holds).
        self.missed_release: Callable[[], None] = lambda: None

    def live_holders(self) -> set[str]:
        """The image holds of the builds running; the image service may drop
        every other `build` hold."""
        return {holder for build in self.running for holder in build.holders}

    async def let_go_of_leftovers(self, attempts: int = 60) -> None:
        """After a crash, remove the containers the interrupted builds held
        (retrying while the peers start); their image holds go with the
        first sweep (services.builder.holds)."""
        pending = self.cache.held()
        for _ in range(attempts):
            for kind, ref in list(pending):
                if await self.peers.remove_container(ref):
                    self.cache.let_go(kind, ref)
                    pending.remove((kind, ref))
            if not pending:
                return
            await asyncio.sleep(1)

    @contextlib.contextmanager
    def scratch_file(self):
        handle, name = tempfile.mkstemp(dir=self.workdir, suffix=".tar")
        os.close(handle)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def check_tags(self, tags: list[str]) -> None:
        for tag in tags:
            if not match_tag(tag):
                raise InvalidArgument(f"invalid reference format: repository name "
                                      f"({tag}) must be lowercase"
                                      if tag.lower() != tag else
                                      f"invalid tag format: {tag}")

    async def build(self, options: BuildOptions, upload: AsyncIterator[bytes]
                    ) -> AsyncIterator[dict]:
        """Docker's build output for one build; user errors before the first
        step raise, later ones end the stream with an error message."""
        BUILDS.inc()
        self.check_tags(options.tags)
        ctx = await self.contexts.acquire(upload, options.dockerfile)
        try:
            dockerfile = instructions.parse(ctx.dockerfile_text, ctx.dockerfile_name)
            build = Build(self, options, ctx, dockerfile)
            self.running.add(build)
            buffered: list[dict] = []
            try:
                async for message in build.run():
                    if options.quiet and "aux" not in message:
                        buffered.append(message)
                    else:
                        yield message
                final = build.stages[-1].image_id if build.stages else ""
                if not final:
                    raise InvalidArgument("No image was generated. Is your Dockerfile empty?")
                for tag in options.tags:   # while the image is still held
                    await self.peers.tag(final, tag)
            except BerthError:
                for message in buffered:
                    yield message
                if not options.remove and not options.force_remove:
                    build.keep_containers()  # rm=false keeps the failed step's container
                raise
            finally:
                try:
                    await build.release()
                finally:
                    self.running.discard(build)
                    if build.holders:  # releases the image service missed
                        self.missed_release()
            if options.quiet:
                yield {"stream": final + "\n"}
                return
            yield {"stream": f"Successfully built {final.removeprefix('sha256:')[:12]}\n"}
            for tag in options.tags:
                yield {"stream": f"Successfully tagged {_full_tag(tag)}\n"}
        finally:
            self.contexts.release(ctx)


def _full_tag(tag: str) -> str:
    last = tag.rsplit("/", 1)[-1]
    return tag if ":" in last else tag + ":latest"
