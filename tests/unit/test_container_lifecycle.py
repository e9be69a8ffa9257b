"""The container manager's state machine on fakes (tests/support/fakes.py):
restart policies and back-off, wait conditions, and attach sessions that
meet the start they wait for. No root, runc or peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from berth.container.v1 import container_pb2 as pb
from services.common.errors import Conflict, InvalidArgument
from services.container import logs, restart
from services.container.runtime import Runtime
from services.container.store import Container
from tests.support.fakes import FakeEngine, container_manager


def run(root: Path, scenario: Callable[[FakeEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = container_manager(root)
        try:
            await scenario(engine)
        finally:
            await engine.close()
    asyncio.run(main())


async def create(engine: FakeEngine, policy: str = "no", retries: int = 0) -> str:
    host = pb.HostConfig(network_mode="none", restart_policy=pb.RestartPolicy(
        name=policy, maximum_retry_count=retries))
    cid, _ = await engine.manager.create(pb.CreateContainerRequest(
        config=pb.ContainerConfig(image="busybox"), host_config=host))
    return cid


async def until(predicate: Callable[[], bool]) -> None:
    """Let the manager's background tasks run until `predicate` holds."""
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.01)


async def settle() -> None:
    """Give every task that is ready a few turns."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- restart policies and back-off ---------------------------------------------


def test_backoff_doubles_on_quick_exits_up_to_a_minute_and_resets_after_a_long_run() -> None:
    backoff = restart.Backoff()
    delays = [backoff.next_delay("c", ran_for=1) for _ in range(12)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == restart.BACKOFF_MAX
    assert backoff.next_delay("c", ran_for=restart.BACKOFF_RESET_AFTER) == 0.1
    assert backoff.next_delay("other", ran_for=0) == 0.1
    backoff.next_delay("c", ran_for=0)
    backoff.forget("c")
    assert backoff.next_delay("c", ran_for=0) == 0.1


@pytest.mark.parametrize(("policy", "retries", "exit_code", "restarts_so_far", "stopped",
                          "expected"), [
    ("no", 0, 1, 0, False, False),
    ("always", 0, 0, 5, False, True),
    ("unless-stopped", 0, 0, 0, False, True),
    ("always", 0, 1, 0, True, False),
    ("on-failure", 0, 0, 0, False, False),
    ("on-failure", 0, 1, 99, False, True),
    ("on-failure", 2, 1, 1, False, True),
    ("on-failure", 2, 1, 2, False, False),
])
def test_should_restart_follows_the_policy(policy: str, retries: int, exit_code: int,
                                           restarts_so_far: int, stopped: bool,
                                           expected: bool) -> None:
    container = Container(
        id="c", name="c", created_ns=0, image="busybox", image_id="", lower_dirs=[],
        config=pb.ContainerConfig(), networking_config=pb.NetworkingConfig(),
        host_config=pb.HostConfig(restart_policy=pb.RestartPolicy(
            name=policy, maximum_retry_count=retries)))
    container.state.exit_code = exit_code
    container.state.restart_count = restarts_so_far
    container.state.manually_stopped = stopped
    assert restart.should_restart(container) is expected


def test_on_failure_restarts_until_its_retry_limit(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine, "on-failure", retries=1)
        container = engine.manager.get(cid)
        await engine.manager.start(cid)
        engine.runtime.exit(cid, 3)
        await until(lambda: container.state.restart_count == 1
                    and container.state.status == "running")
        assert engine.runtime.calls.count(("create", cid)) == 2
        engine.runtime.exit(cid, 3)
        await until(lambda: container.state.status == "exited")
        await settle()
        assert container.state.restart_count == 1
        assert container.state.exit_code == 3
        assert engine.runtime.calls.count(("create", cid)) == 2
    run(tmp_path, scenario)


def test_a_stopped_container_is_not_restarted(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine, "always")
        await engine.manager.start(cid)
        assert await engine.manager.stop(cid, timeout=0) is False
        container = engine.manager.get(cid)
        await settle()
        assert container.state.status == "exited"
        assert container.state.exit_code == 137
        assert engine.runtime.calls.count(("create", cid)) == 1
    run(tmp_path, scenario)


def test_stopping_a_restarting_container_cancels_its_restart(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine, "always")
        container = engine.manager.get(cid)
        await engine.manager.start(cid)
        engine.runtime.exit(cid, 0)
        await until(lambda: container.state.status == "restarting")
        assert await engine.manager.stop(cid) is False
        assert container.state.status == "exited"
        await asyncio.sleep(restart.BACKOFF_START * 3)
        assert container.state.status == "exited"
        assert engine.runtime.calls.count(("create", cid)) == 1
    run(tmp_path, scenario)


# -- wait conditions -------------------------------------------------------------


async def registered_wait(engine: FakeEngine, cid: str, condition: str
                          ) -> asyncio.Task[tuple[int, str] | None]:
    """The wait's result as a task, once the wait is registered."""
    waiting: AsyncIterator[tuple[int, str] | None] = engine.manager.wait(cid, condition)
    assert await anext(waiting) is None
    return asyncio.create_task(anext(waiting))


def test_not_running_answers_at_once_for_a_created_container(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        assert await (await registered_wait(engine, cid, "not-running")) == (0, "")
        assert await (await registered_wait(engine, cid, "")) == (0, "")
    run(tmp_path, scenario)


def test_not_running_waits_for_the_exit_of_a_running_container(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        await engine.manager.start(cid)
        result = await registered_wait(engine, cid, "not-running")
        await settle()
        assert not result.done()
        engine.runtime.exit(cid, 7)
        assert await result == (7, "")
    run(tmp_path, scenario)


def test_next_exit_waits_for_an_exit_after_the_wait(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        result = await registered_wait(engine, cid, "next-exit")
        await settle()
        assert not result.done()
        await engine.manager.start(cid)
        await settle()
        assert not result.done()
        engine.runtime.exit(cid, 2)
        assert await result == (2, "")
    run(tmp_path, scenario)


def test_removed_waits_past_the_exit_until_the_container_is_gone(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        await engine.manager.start(cid)
        result = await registered_wait(engine, cid, "removed")
        engine.runtime.exit(cid, 5)
        await until(lambda: engine.manager.get(cid).state.status == "exited")
        await settle()
        assert not result.done()
        await engine.manager.remove(cid)
        assert await result == (5, "")
        assert cid in engine.peers.volumes.released
    run(tmp_path, scenario)


def test_wait_refuses_an_unknown_condition(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        with pytest.raises(InvalidArgument, match="invalid condition"):
            await anext(engine.manager.wait(cid, "exited"))
    run(tmp_path, scenario)


# -- attach before start -----------------------------------------------------------


class Requests:
    """An attach call's request stream, fed by the test."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[pb.AttachRequest | None] = asyncio.Queue()

    def __aiter__(self) -> Requests:
        return self

    async def __anext__(self) -> pb.AttachRequest:
        request = await self.queue.get()
        if request is None:
            raise StopAsyncIteration
        return request


def options(cid: str, **extra: object) -> pb.AttachRequest:
    return pb.AttachRequest(options=pb.AttachOptions(id=cid, stream=True, stdout=True,
                                                     **extra))


def test_an_attach_to_a_created_container_gets_the_output_from_its_start(
        tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        requests = Requests()
        requests.queue.put_nowait(options(cid))
        session = engine.sessions.attach(requests)
        assert (await anext(session)).attached
        frame = asyncio.create_task(anext(session))
        await settle()
        assert not frame.done()
        await engine.manager.start(cid)
        calls = engine.runtime.calls
        assert calls.index(("connect_attach", cid)) < calls.index(("start", cid))
        conmon = engine.runtime.conmon_ends[cid][0]
        conmon.send(b"\x02hello\n")
        assert (await frame).data == b"hello\n"
        conmon.close()
        assert [f async for f in session] == []
    run(tmp_path, scenario)


def test_a_start_waits_for_an_attach_still_reading_its_options(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        requests = Requests()
        session = engine.sessions.attach(requests)
        attached = asyncio.create_task(anext(session))
        await settle()
        start = asyncio.create_task(engine.manager.start(cid))
        await settle()
        assert not start.done()
        assert ("start", cid) not in engine.runtime.calls
        requests.queue.put_nowait(options(cid))
        assert (await attached).attached
        assert await start is False
        assert len(engine.runtime.conmon_ends[cid]) == 1
        await session.aclose()
    run(tmp_path, scenario)


def test_a_failed_start_ends_the_attaches_waiting_for_it(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        requests = Requests()
        requests.queue.put_nowait(options(cid))
        session = engine.sessions.attach(requests)
        assert (await anext(session)).attached
        rest = asyncio.create_task(anext(session, None))
        await settle()
        engine.runtime.create_error = "exec: \"nope\": executable file not found in $PATH"
        with pytest.raises(InvalidArgument, match="executable file not found"):
            await engine.manager.start(cid)
        assert await rest is None
        assert engine.manager.get(cid).state.exit_code == 127
    run(tmp_path, scenario)


def test_attach_refuses_a_paused_container_and_bad_detach_keys(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        sessions = engine.sessions
        for request, error, message in (
                (options(cid, detach_keys="ctrl-"), InvalidArgument, "Invalid detach keys"),
                (pb.AttachRequest(stdin=b"x"), InvalidArgument, "must carry the options")):
            requests = Requests()
            requests.queue.put_nowait(request)
            with pytest.raises(error, match=message):
                await anext(sessions.attach(requests))
        await engine.manager.start(cid)
        await engine.manager.pause(cid)
        requests = Requests()
        requests.queue.put_nowait(options(cid))
        with pytest.raises(Conflict, match="is paused"):
            await anext(sessions.attach(requests))
    run(tmp_path, scenario)


def runc_answering(tmp_path: Path, error: str) -> Runtime:
    """The real runc wrapper over a stand-in runc that fails every command with
    `error` the way runc logs it."""
    script = tmp_path / "runc"
    script.write_text(f"#!/bin/sh\necho 'time=\"2026-01-01T00:00:00Z\" level=error "
                      f"msg=\"{error}\"' >&2\nexit 1\n")
    script.chmod(0o755)
    return Runtime(tmp_path / "exec", str(script))


@pytest.mark.parametrize("error", ["unable to signal init: os: process already finished",
                                   "container not running"])
def test_stop_succeeds_when_the_process_exits_as_it_is_signalled(
        tmp_path: Path, error: str) -> None:
    """runc's kill loses the race with the process's own exit (seen at
    StopPodSandbox): the container is stopped, not an error."""
    runc = runc_answering(tmp_path, error)

    async def scenario(engine: FakeEngine) -> None:
        async def kill_after_exit(cid: str, signum: int, all_processes: bool = False) -> None:
            engine.runtime.exit(cid, 0)
            await runc.kill(cid, signum, all_processes)
        engine.runtime.kill = kill_after_exit
        cid = await create(engine)
        await engine.manager.start(cid)
        assert await engine.manager.stop(cid, timeout=10) is False
        container = engine.manager.get(cid)
        assert (container.state.status, container.state.exit_code) == ("exited", 0)
    run(tmp_path, scenario)


def test_logs_follow_a_container_that_exits_while_its_log_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker run` without -d follows the logs of a container that may exit
    at any moment: output written just before the exit is not lost."""
    async def scenario(engine: FakeEngine) -> None:
        cid = await create(engine)
        await engine.manager.start(cid)
        loop = asyncio.get_running_loop()
        read_lines = logs.read_lines

        def read_then_exit(path: Path) -> tuple[list[logs.LogLine], int]:
            found = read_lines(path)
            path.write_bytes(b"2026-12-04T12:00:00.000000000Z stdout F hi\n")
            loop.call_soon_threadsafe(engine.runtime.exit, cid, 0)
            time.sleep(0.2)
            return found
        monkeypatch.setattr(logs, "read_lines", read_then_exit)
        request = pb.LogsRequest(id=cid, stdout=True, follow=True)
        lines = [line.data async for line in engine.sessions.logs(request)]
        assert engine.manager.get(cid).state.status == "exited"
        assert lines == [b"hi\n"]
    run(tmp_path, scenario)
