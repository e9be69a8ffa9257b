"""Pieces of the CRI streaming server that need no engine: one-time tokens,
the remotecommand status forms, terminal sizes split across reads."""

from __future__ import annotations

import json

from services.cri.streaming import remotecommand
from services.cri.streaming.server import split_address
from services.cri.streaming.tokens import TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_work_once_and_expire_after_a_minute() -> None:
    clock = Clock()
    tokens: TokenCache[str] = TokenCache(clock=clock)
    first, second = tokens.insert("exec a"), tokens.insert("exec b")
    assert first != second
    assert tokens.consume(first) == "exec a"
    assert tokens.consume(first) is None
    assert tokens.consume("made-up") is None
    clock.now += 60
    assert tokens.consume(second) is None
    late = tokens.insert("exec c")
    clock.now += 59.9
    assert tokens.consume(late) == "exec c"


def test_v4_status_carries_the_exit_code_as_client_go_reads_it() -> None:
    status = json.loads(remotecommand.encode_status(
        remotecommand.V4, remotecommand.exit_failure(["sh", "-c", "exit 3"], 3)))
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads(remotecommand.encode_status(remotecommand.V5, remotecommand.success())) \
        == {"metadata": {}, "status": "Success"}


def test_before_v4_only_a_failure_message_is_sent() -> None:
    assert remotecommand.encode_status(remotecommand.V3, remotecommand.success()) == b""
    assert remotecommand.encode_status(
        remotecommand.V2, remotecommand.failure("no such container")) == b"no such container"


def test_terminal_sizes_split_anywhere() -> None:
    decoder = remotecommand.ResizeDecoder()
    wire = b'{"Width":80,"Height":24}\n{"Width":100,"Height":30}\n'
    sizes = [size for byte in wire for size in decoder.feed(bytes([byte]))]
    assert sizes == [(80, 24), (100, 30)]


def test_listen_addresses() -> None:
    assert split_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_address("[::1]:10010") == ("::1", 10010)
    assert split_address(":10010") == ("0.0.0.0", 10010)
