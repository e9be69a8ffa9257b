"""Fixtures of the end-to-end modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.engine import Engine


@pytest.fixture
def no_leftovers(engine: Engine) -> Iterator[None]:
    """After the test, every container of the module's engine is gone. A
    module that wants it for all its tests says
    `pytestmark = pytest.mark.usefixtures("no_leftovers")`."""
    yield
    ids = engine.docker("ps", "-aq").stdout.decode().split()
    if ids:
        engine.docker("rm", "-f", *ids, check=False)
