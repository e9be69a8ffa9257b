"""An exec whose start fails for a reason of ours (not the user's command)
reports it: the error in the hijacked stream, exit code 126 as Docker's
daemon gives, and an ExecInspect that does not say the exec ran and exited
0. On the fakes of tests/support/fakes.py, with the exec launch failing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from berth.container.v1 import container_pb2 as pb
from services.common.config import Config
from services.common.errors import Internal
from services.common.events import EventBus
from services.container.container_events import ContainerEvents
from services.container.processes import Processes
from tests.support.fakes import FakeEngine, container_manager


async def no_stdin() -> AsyncIterator[pb.ExecStartRequest]:
    return
    yield


async def launch_fails(*args: object) -> None:
    raise RuntimeError("conmon vanished")


def run(root: Path, scenario: Callable[[FakeEngine, Processes, str], Awaitable[None]]) -> None:
    async def main() -> None:
        engine = container_manager(root)
        try:
            cid, _ = await engine.manager.create(pb.CreateContainerRequest(
                config=pb.ContainerConfig(image="busybox"),
                host_config=pb.HostConfig(network_mode="none")))
            await engine.manager.start(cid)
            bundle = engine.manager.bundle(engine.manager.get(cid))
            (bundle.path / "config.json").write_text(json.dumps({"process": {
                "args": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}}}))
            config = Config(data_root=root / "data", exec_root=root / "exec")
            processes = Processes(config, engine.manager,
                                  ContainerEvents(EventBus("container"), engine.manager))
            processes.execs._launch = launch_fails  # type: ignore[method-assign]
            await scenario(engine, processes, cid)
        finally:
            await engine.close()
    asyncio.run(main())


def test_an_attached_exec_that_fails_to_start_reports_the_error_and_126(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine, processes: Processes, cid: str) -> None:
        record = processes.exec_create(cid, pb.ExecConfig(cmd=["true"], attach_stdout=True))
        options = pb.ExecStartOptions(exec_id=record.id)
        frames = [frame async for frame in processes.exec_start(options, no_stdin())]
        assert [frame.data for frame in frames] == [
            b"failed to start exec process: conmon vanished\r\n"]
        assert frames[-1].exit_code == 126
        instance = processes.exec_inspect(record.id)
        assert not instance.running
        assert instance.HasField("exit_code") and instance.exit_code == 126
        again = [frame async for frame in processes.exec_start(options, no_stdin())]
        assert b"has already run" in again[0].data
    run(tmp_path, scenario)


def test_a_detached_exec_that_fails_to_start_is_an_internal_error(tmp_path: Path) -> None:
    async def scenario(engine: FakeEngine, processes: Processes, cid: str) -> None:
        record = processes.exec_create(cid, pb.ExecConfig(cmd=["true"]))
        options = pb.ExecStartOptions(exec_id=record.id, detach=True)
        with pytest.raises(Internal, match="conmon vanished"):
            await anext(processes.exec_start(options, no_stdin()))
        assert processes.exec_inspect(record.id).exit_code == 126
    run(tmp_path, scenario)
