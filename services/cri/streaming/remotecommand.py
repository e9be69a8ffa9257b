"""Kubernetes remotecommand sessions (exec and attach) over the container
service's own exec and attach calls.

A transport (SPDY or WebSocket) hands a session an `IO`: stdin from the
client, stdout/stderr to it, terminal sizes, and the error stream that ends
the session with a status. The status is the v4 JSON form (metav1.Status:
Success, or Failure with reason NonZeroExitCode and the exit code as an
ExitCode cause); protocols before v4 carry only a failure's message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from berth.container.v1 import container_pb2 as pb
from berth.container.v1.container_pb2_grpc import ContainerServiceStub
from services.common.errors import BerthError, Conflict, NotFound
from services.common.peers import PeerClient

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"

STDOUT, STDERR = 1, 2
INITIAL_SIZE_WAIT = 1.0     # seconds a TTY exec waits for the client's first terminal size

Status = dict[str, Any]


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: list[str]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


class IO(Protocol):
    """What a transport gives a session."""

    async def read_stdin(self) -> bytes:
        """The next stdin bytes; b"" once the client closed stdin."""

    async def write_output(self, stream: int, data: bytes) -> None:
        """Send `data` on STDOUT or STDERR."""

    def resizes(self) -> AsyncIterator[tuple[int, int]]:
        """The terminal sizes (width, height) the client sends."""

    async def finish(self, status: Status) -> None:
        """Close the output streams and report `status` on the error stream."""


def success() -> Status:
    return {"metadata": {}, "status": "Success"}


def failure(message: str, reason: str = "InternalError") -> Status:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason}


def exit_failure(cmd: list[str], code: int) -> Status:
    status = failure(f"command terminated with non-zero exit code: error executing command "
                     f"{cmd}, exit code {code}", "NonZeroExitCode")
    status["details"] = {"causes": [{"reason": "ExitCode", "message": str(code)}]}
    return status


def encode_status(protocol: str, status: Status) -> bytes:
    """The error stream's bytes: v4 and later JSON, earlier the message of a
    failure (nothing for success)."""
    if protocol in (V4, V5):
        return json.dumps(status).encode()
    if status["status"] == "Success":
        return b""
    return status["message"].encode()


class ResizeDecoder:
    """Terminal sizes from the resize stream: JSON objects {"Width", "Height"}
    one after another (client-go's json.Encoder), split anywhere."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        self._buffer += data.decode(errors="replace")
        sizes = []
        while self._buffer.strip():
            text = self._buffer.lstrip()
            try:
                value, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                break       # an incomplete object: wait for more bytes
            self._buffer = text[end:]
            if isinstance(value, dict):
                sizes.append((int(value.get("Width", 0)), int(value.get("Height", 0))))
        return sizes


async def decode_resizes(read: Callable[[], Awaitable[bytes]]) -> AsyncIterator[tuple[int, int]]:
    decoder = ResizeDecoder()
    while chunk := await read():
        for size in decoder.feed(chunk):
            yield size


ContainerService = PeerClient[ContainerServiceStub]


class _Resizer:
    """Applies the terminal sizes the client sends, from a task of its own.
    A size sent before the process shows output is held and applied at its
    first output: only then is its terminal sure to exist (a size applied
    before may be lost)."""

    def __init__(self, io: IO, resize: Callable[[int, int], Awaitable[Any]],
                 terminal_exists: bool) -> None:
        self._resize = resize
        self._terminal_exists = terminal_exists
        self.latest: tuple[int, int] | None = None
        self._sized = asyncio.Event()        # the first size came, or none will
        self._task = asyncio.create_task(self._follow(io))

    async def _follow(self, io: IO) -> None:
        try:
            async for size in io.resizes():
                self.latest = size
                self._sized.set()
                if self._terminal_exists:
                    await self._apply(*size)
        finally:
            self._sized.set()

    async def initial_size(self) -> tuple[int, int] | None:
        """The size the client sends first (clients send it at once), to
        start the terminal with; None when none comes soon."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._sized.wait(), INITIAL_SIZE_WAIT)
        return self.latest

    async def _apply(self, width: int, height: int) -> None:
        try:
            await self._resize(width, height)
        except (NotFound, Conflict):
            pass            # the process ended meanwhile

    async def on_output(self) -> None:
        if not self._terminal_exists:
            self._terminal_exists = True
            if self.latest is not None:
                await self._apply(*self.latest)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


@contextlib.asynccontextmanager
async def _resizing(io: IO, tty: bool, resize: Callable[[int, int], Awaitable[Any]],
                    terminal_exists: bool) -> AsyncIterator[_Resizer | None]:
    if not tty:
        yield None
        return
    resizer = _Resizer(io, resize, terminal_exists)
    try:
        yield resizer
    finally:
        await resizer.stop()


async def _relay(call: Any, io: IO, stdin_message: Callable[[bytes], Any] | None,
                 close_stdin_message: Any, resizer: _Resizer | None) -> Any:
    """Client stdin into the call, the call's output to the client; returns
    the call's last frame."""

    async def forward_stdin() -> None:
        assert stdin_message is not None
        while chunk := await io.read_stdin():
            await call.write(stdin_message(chunk))
        await call.write(close_stdin_message)

    stdin_task = asyncio.create_task(forward_stdin()) if stdin_message is not None else None
    last = None
    try:
        async for frame in call:
            last = frame
            if frame.data:
                if resizer is not None:
                    await resizer.on_output()
                await io.write_output(STDERR if frame.stream == pb.IOFrame.STDERR else STDOUT,
                                      frame.data)
    finally:
        if stdin_task is not None:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stdin_task
    return last


async def run_exec(container: ContainerService, request: ExecRequest, io: IO) -> None:
    """Run the command through ExecCreate/ExecStart and end `io` with its status."""
    exec_id = ""

    async def resize(width: int, height: int) -> None:
        await container.ExecResize(pb.ExecResizeRequest(exec_id=exec_id, width=width,
                                                        height=height))

    # The first size becomes the terminal's initial size: a terminal made
    # with it is right before the process reads any typed-ahead input.
    async with _resizing(io, request.tty, resize, terminal_exists=False) as resizer:
        try:
            # No detach keys: a CRI client's ctrl-p ctrl-q are input for the process.
            created = await container.ExecCreate(pb.ExecCreateRequest(
                container_id=request.container_id, config=pb.ExecConfig(
                    cmd=request.cmd, tty=request.tty, attach_stdin=request.stdin,
                    attach_stdout=request.stdout, attach_stderr=request.stderr,
                    no_detach_keys=True)))
        except BerthError as error:
            await io.finish(failure(f"failed to exec in container: {error.message}"))
            return
        exec_id = created.id
        initial = await resizer.initial_size() if resizer is not None else None
        call = container.ExecStart()
        try:
            await call.write(pb.ExecStartRequest(options=pb.ExecStartOptions(
                exec_id=exec_id, tty=request.tty,
                console_size=[initial[1], initial[0]] if initial else [])))
            last = await _relay(call, io, (lambda data: pb.ExecStartRequest(stdin=data))
                                if request.stdin else None,
                                pb.ExecStartRequest(close_stdin=True), resizer)
            if last is not None and last.HasField("exit_code"):
                code = last.exit_code
            else:
                code = (await container.ExecInspect(
                    pb.ExecInspectRequest(exec_id=exec_id))).exit_code
        except BerthError as error:
            await io.finish(failure(f"failed to exec in container: {error.message}"))
            return
        except ConnectionError:
            return
        finally:
            call.cancel()           # nothing when it ended; else the client went away
    await io.finish(success() if code == 0 else exit_failure(request.cmd, code))


async def run_attach(container: ContainerService, request: AttachRequest, io: IO) -> None:
    """Attach through the container service until the container's output
    ends, then end `io` with success."""

    async def resize(width: int, height: int) -> None:
        await container.Resize(pb.ResizeRequest(id=request.container_id, width=width,
                                                height=height))

    call = container.Attach()
    async with _resizing(io, request.tty, resize, terminal_exists=True) as resizer:
        try:
            # No detach keys: a CRI client's ctrl-p ctrl-q are input for the process.
            await call.write(pb.AttachRequest(options=pb.AttachOptions(
                id=request.container_id, stdin=request.stdin, stdout=request.stdout,
                stderr=request.stderr, stream=True, no_detach_keys=True)))
            await _relay(call, io, (lambda data: pb.AttachRequest(stdin=data))
                         if request.stdin else None, pb.AttachRequest(close_stdin=True),
                         resizer)
        except BerthError as error:
            await io.finish(failure(f"failed to attach to container: {error.message}"))
            return
        except ConnectionError:
            return
        finally:
            call.cancel()
    await io.finish(success())
