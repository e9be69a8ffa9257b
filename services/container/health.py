"""Healthchecks: one asyncio task per running container that has a
healthcheck, running the test as an exec on Docker's schedule and keeping
State.Health (status, failing streak, the last five probe results)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from berth.container.v1 import container_pb2
from berth.image.v1 import image_pb2
from services.container.archive import go_time

log = logging.getLogger("berth.container.health")

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


@dataclass
class ProbeResult:
    exit_code: int
    output: str
    start: str
    end: str


# Runs a probe command in the container with a timeout in seconds.
Prober = Callable[[list[str], float], Awaitable[tuple[int, str]]]
# Called with the new health dict after each probe and whether the status changed.
Recorder = Callable[[dict, bool], None]


def timestamp() -> str:
    """Now, as Go marshals a time (RFC 3339 with nanoseconds), like Docker's."""
    return go_time(time.time_ns())


def probe_command(health: image_pb2.HealthConfig, shell: list[str]) -> list[str] | None:
    """The command a healthcheck runs, None when it is disabled."""
    test = list(health.test.values)
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return test[1:] or None
    if test[0] == "CMD-SHELL":
        return [*(shell or ["/bin/sh", "-c"]), " ".join(test[1:])]
    return test


def new_health() -> dict:
    return {"status": STARTING, "failing_streak": 0, "log": []}


def record(health: dict, result: ProbeResult, retries: int, in_start_period: bool) -> bool:
    """Apply one probe result; returns whether the status changed."""
    before = health["status"]
    health["log"] = [*health["log"], {"start": result.start, "end": result.end,
                                      "exit_code": result.exit_code,
                                      "output": result.output}][-MAX_LOG_ENTRIES:]
    if result.exit_code == 0:
        health["failing_streak"] = 0
        health["status"] = HEALTHY
    elif not (in_start_period and before == STARTING):
        # Failures during the start period do not count until it ends.
        health["failing_streak"] += 1
        if health["failing_streak"] >= retries:
            health["status"] = UNHEALTHY
    return health["status"] != before


class HealthMonitor:
    """Probes one container until cancelled."""

    def __init__(self, config: image_pb2.HealthConfig, command: list[str], prober: Prober,
                 recorder: Recorder, health: dict,
                 should_probe: Callable[[], bool] = lambda: True) -> None:
        self.interval = (config.interval_ns or DEFAULT_INTERVAL) / SECOND
        self.timeout = (config.timeout_ns or DEFAULT_TIMEOUT) / SECOND
        self.start_period = config.start_period_ns / SECOND
        self.start_interval = (config.start_interval_ns or DEFAULT_START_INTERVAL) / SECOND
        self.retries = config.retries or DEFAULT_RETRIES
        self.command = command
        self.prober = prober
        self.recorder = recorder
        self.health = health
        self.should_probe = should_probe
        self.started = time.monotonic()

    def _in_start_period(self) -> bool:
        return time.monotonic() - self.started < self.start_period

    def _next_delay(self) -> float:
        if self._in_start_period() and self.health["status"] == STARTING:
            return min(self.start_interval, self.interval)
        return self.interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._next_delay())
            if not self.should_probe():     # a paused container is not probed
                continue
            result = await self.probe()
            changed = record(self.health, result, self.retries, self._in_start_period())
            self.recorder(self.health, changed)

    async def probe(self) -> ProbeResult:
        start = timestamp()
        try:
            code, output = await asyncio.wait_for(self.prober(self.command, self.timeout),
                                                  self.timeout + 5)
        except TimeoutError:
            code, output = -1, f"Health check exceeded timeout ({self._timeout_text()})"
        except Exception as exc:  # a probe that cannot run is a failed probe
            log.debug("health probe failed: %s", exc)
            code, output = -1, str(exc)
        return ProbeResult(exit_code=code, output=output[:MAX_OUTPUT], start=start,
                           end=timestamp())

    def _timeout_text(self) -> str:
        seconds = self.timeout
        return f"{seconds:g}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:g}s"


class HealthTasks:
    """The running monitors, by container ID."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, container_id: str, monitor: HealthMonitor) -> None:
        self.stop(container_id)
        self._tasks[container_id] = asyncio.create_task(monitor.run())

    def stop(self, container_id: str) -> None:
        task = self._tasks.pop(container_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def mark_stopped(state: dict) -> None:
    """A stopped container reports unhealthy, as Docker's does."""
    if state:
        state["status"] = UNHEALTHY


def health_proto(state: dict) -> container_pb2.Health | None:
    """State.Health for inspect; None when the container has no healthcheck."""
    if not state:
        return None
    return container_pb2.Health(
        status=state["status"], failing_streak=state["failing_streak"],
        log=[container_pb2.HealthLog(**entry) for entry in state["log"]])


def status_suffix(state: dict) -> str:
    """What `docker ps` appends to "Up ...": (healthy), (health: starting)..."""
    if not state:
        return ""
    status = state["status"]
    return f" (health: {status})" if status == STARTING else f" ({status})"


def filter_status(state: dict, healthcheck: image_pb2.HealthConfig) -> str:
    """The value `docker ps --filter health=` matches: none without a healthcheck."""
    if probe_command(healthcheck, []) is None:
        return "none"
    return state.get("status", STARTING) if state else STARTING
