"""Endpoints berth does not serve answer as a dockerd outside a swarm and
without plugins does (issue 14 item 13), through the docker CLI and SDK."""

from __future__ import annotations

import docker
import pytest

from tests.support.engine import Engine

NOT_A_MANAGER = "This node is not a swarm manager. Use \"docker swarm init\""


def test_ping_says_swarm_inactive(engine: Engine) -> None:
    response = engine.client().api.get(engine.client().api._url("/_ping"))
    assert response.headers["Swarm"] == "inactive"


@pytest.mark.parametrize("args", [
    ("node", "ls"), ("service", "ls"), ("secret", "ls"), ("config", "ls"),
    ("swarm", "unlock-key"), ("service", "inspect", "web"), ("node", "inspect", "self"),
])
def test_swarm_objects_need_a_manager(engine: Engine, args: tuple[str, ...]) -> None:
    result = engine.docker(*args, check=False)
    assert result.returncode != 0
    assert NOT_A_MANAGER in result.stderr.decode()


def test_swarm_leave_and_the_sdk(engine: Engine) -> None:
    result = engine.docker("swarm", "leave", "--force", check=False)
    assert b"This node is not part of a swarm" in result.stderr
    client = engine.client()
    # The SDK (and its test fixtures) take this answer of a forced leave as done.
    assert client.swarm.leave(force=True)
    with pytest.raises(docker.errors.APIError) as services:
        client.services.list()
    assert services.value.response.status_code == 503
    assert NOT_A_MANAGER in services.value.explanation
    update = client.api._put(client.api._url("/volumes/{0}", "data"), params={"version": 1})
    assert update.status_code == 503
    assert update.json()["message"] == ("volume update only valid for cluster volumes, "
                                        "but swarm is unavailable")


def test_no_plugins(engine: Engine) -> None:
    client = engine.client()
    assert client.plugins.list() == []
    assert engine.docker("plugin", "ls", "-q").stdout == b""
    with pytest.raises(docker.errors.NotFound) as missing:
        client.plugins.get("vieux/sshfs")
    assert missing.value.explanation == 'plugin "vieux/sshfs" not found'
    removed = engine.docker("plugin", "rm", "vieux/sshfs:latest", check=False)
    assert b'plugin "vieux/sshfs:latest" not found' in removed.stderr
