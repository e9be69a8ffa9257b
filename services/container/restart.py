"""Restart policies: whether a container that exited restarts, and after
how long. As in Docker, the delay starts at 100 ms and doubles on each quick
exit up to a minute; a run of 10 s or more starts it over."""

from __future__ import annotations

from services.container.store import Container

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0


def should_restart(container: Container) -> bool:
    policy = container.host_config.restart_policy
    if container.state.manually_stopped:
        return False
    if policy.name in ("always", "unless-stopped"):
        return True
    if policy.name == "on-failure" and container.state.exit_code != 0:
        limit = policy.maximum_retry_count
        return limit == 0 or container.state.restart_count < limit
    return False


class Backoff:
    """The restart delay of each container, from how long its last run lasted."""

    def __init__(self) -> None:
        self._delays: dict[str, float] = {}

    def next_delay(self, container_id: str, ran_for: float) -> float:
        delay = self._delays.get(container_id, 0)
        delay = BACKOFF_START if ran_for >= BACKOFF_RESET_AFTER or not delay else min(
            delay * 2, BACKOFF_MAX)
        self._delays[container_id] = delay
        return delay

    def forget(self, container_id: str) -> None:
        self._delays.pop(container_id, None)
