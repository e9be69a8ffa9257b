"""Requests generated from Docker's API description (schemathesis) against a
real engine over its unix socket: whatever they hold, the gateway answers
with no 5xx on the container, image, network, volume, exec and system
endpoints.

The engine has no image, so nothing a generated request creates can run;
the run is bounded (a few examples per operation, derandomized, so a run is
repeatable) and the module prints how many cases it sent and how many got a
5xx.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from docker.transport import UnixHTTPAdapter
from hypothesis import HealthCheck, Phase, settings
from schemathesis.config import SchemathesisConfig

from tests.support.engine import REPO, Engine

SPEC_NAME = "reference/docker-engine-api-v1.50.yaml"
# shared/ sits beside the clone in CI; BERTH_SHARED_DIR or /work/shared elsewhere.
SHARED_DIRS = [Path(os.environ.get("BERTH_SHARED_DIR", REPO.parent / "shared")),
               REPO.parent / "shared", Path("/work/shared")]
SPEC = next((d / SPEC_NAME for d in SHARED_DIRS if (d / SPEC_NAME).is_file()), None)
if SPEC is None:
    pytest.skip(f"{SPEC_NAME} not found in {', '.join(map(str, SHARED_DIRS))}",
                allow_module_level=True)

TAGS = ["Container", "Image", "Network", "Volume", "Exec", "System"]
# Operations left out, and why:
EXCLUDED = {
    "ContainerAttach": "hijacks the connection and streams until the container ends",
    "ContainerAttachWebsocket": "a WebSocket session, not a request and answer",
    "ExecStart": "hijacks the connection and streams until the process ends",
    "SystemEvents": "streams until the client leaves (no `until` in most cases)",
    "ImageCreate": "pulls from registries or imports from URLs: traffic beyond loopback",
    "ImagePush": "traffic to a registry",
    "ImageSearch": "queries Docker Hub",
    "SystemAuth": "logs in to a registry",
    "ImageBuild": "pulls FROM images from registries and runs build containers",
}
MAX_EXAMPLES = 25
BASE_URL = "http://berth/v1.50"

# The coverage phase (every boundary case of every field: thousands for
# POST /containers/create alone) would take minutes; the fuzzing phase,
# positive and negative cases, is bounded by MAX_EXAMPLES.
CONFIG = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
schema = (schemathesis.openapi.from_path(SPEC, config=CONFIG)
          .include(tag=TAGS)
          .exclude(operation_id=list(EXCLUDED)))
answers: Counter[str] = Counter()


@pytest.fixture(scope="module")
def session(engine: Engine) -> Iterator[requests.Session]:
    with requests.Session() as unix_session:
        unix_session.mount("http://berth/", UnixHTTPAdapter(f"http+unix://{engine.socket}",
                                                            timeout=60))
        # Without images no generated create can run anything.
        assert unix_session.get(f"{BASE_URL}/images/json").json() == []
        yield unix_session
    print(f"\nfuzz: {sum(answers.values())} cases, {answers['5xx']} answered 5xx "
          f"({dict(answers)})")


def kernel_safe(case: schemathesis.Case) -> None:
    """A generated network's subnet, gateway or bridge name could shadow the
    host's own routes: networks are fuzzed with the default address pool."""
    if case.operation.label.endswith(" /networks/create") and isinstance(case.body, dict):
        case.body.pop("IPAM", None)
        case.body.pop("Options", None)


def is_swarm_refusal(status: int, text: str) -> bool:
    """Docker's own 503 for what only a swarm serves (e.g. PUT /volumes/{name}):
    the answer a dockerd outside a swarm gives, not a server error."""
    return status == 503 and "swarm" in text


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, session: requests.Session) -> None:
    kernel_safe(case)
    response = case.call(base_url=BASE_URL, session=session)
    if is_swarm_refusal(response.status_code, response.text):
        answers["503 (no swarm)"] += 1
        return
    answers[f"{response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (
        f"{response.status_code} {response.text[:300]}\n"
        f"{case.as_curl_command(headers=None)}")

