"""The docker CLI over TLS (`--tlsverify`, tcp://): hijacked attach and exec
keep their output after the client half-closes (services/gateway/tls.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.engine import Engine, running_engine
from tests.support.registry import free_port
from tests.support.tls import Certs, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def engine(certs: Certs, port: int) -> Iterator[Engine]:
    args = ("--tcp", f"127.0.0.1:{port}", "--tlscacert", str(certs.ca),
            "--tlscert", str(certs.cert), "--tlskey", str(certs.key))
    with running_engine(args=args) as running:
        yield running


@pytest.fixture
def over_tls(certs: Certs, port: int) -> list[str]:
    return ["--tlsverify", "--tlscacert", str(certs.ca), "--tlscert", str(certs.cert),
            "--tlskey", str(certs.key), "-H", f"tcp://127.0.0.1:{port}"]


def test_run_without_stdin_prints_its_output(engine: Engine, busybox: str,
                                             over_tls: list[str]) -> None:
    result = engine.docker(*over_tls, "run", "--rm", busybox, "echo", "hello")
    assert result.stdout == b"hello\n"


def test_run_gets_all_of_a_long_output(engine: Engine, busybox: str,
                                       over_tls: list[str]) -> None:
    result = engine.docker(*over_tls, "run", "--rm", busybox, "seq", "1", "20000")
    assert result.stdout.decode().split() == [str(n) for n in range(1, 20001)]


def test_run_with_stdin_echoes_it_back(engine: Engine, busybox: str,
                                       over_tls: list[str]) -> None:
    result = engine.docker(*over_tls, "run", "--rm", "-i", busybox, "cat",
                           input=b"through tls\n")
    assert result.stdout == b"through tls\n"


def test_exec_prints_its_output(engine: Engine, busybox: str, over_tls: list[str]) -> None:
    container = engine.docker(*over_tls, "run", "-d", busybox, "sleep", "300").stdout
    name = container.decode().strip()
    try:
        result = engine.docker(*over_tls, "exec", name, "seq", "1", "5000")
        assert result.stdout.decode().split() == [str(n) for n in range(1, 5001)]
    finally:
        engine.docker(*over_tls, "rm", "-f", name, check=False)
