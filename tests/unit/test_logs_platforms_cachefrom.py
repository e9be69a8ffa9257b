"""Units of the log drivers (Docker's create-time checks, limits, --details
attributes, syslog formats), the platform check on local images and the
--cache-from history match."""

from __future__ import annotations

import re
import socket

import pytest

from berth.container.v1 import container_pb2
from services.common.errors import InvalidArgument, NotFound
from services.container import logdrivers, logs, syslogship
from services.image import cache_from, platforms


def log_config(driver: str, **options: str) -> container_pb2.LogConfig:
    return container_pb2.LogConfig(type=driver, config=options)


@pytest.mark.parametrize(("driver", "options", "message"), [
    ("gelf-ish", {}, "logger: no log driver named 'gelf-ish' is registered"),
    ("json-file", {"mode": "fast"}, "logger: logging mode not supported: fast"),
    ("json-file", {"max-buffer-size": "1m"},
     "logger: max-buffer-size option is only supported with 'mode=non-blocking'"),
    ("json-file", {"max-size": "0"}, "max-size must be a positive number"),
    ("json-file", {"max-file": "0"}, "max-file cannot be less than 1"),
    ("local", {"max-file": "-1"}, "max-file must not be negative"),
    ("syslog", {"syslog-address": "tcp+tls://h:1"}, "not supported by berth"),
    ("journald", {"max-size": "1m"}, "unknown log opt 'max-size' for journald log driver"),
    ("json-file", {"tag": "{{.Nope}}"}, "can't evaluate field Nope"),
    ("json-file", {"labels-regex": "("}, "error parsing regexp"),
])
def test_validation_messages(driver: str, options: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        logdrivers.validate(log_config(driver, **options))


def test_none_takes_anything_and_defaults() -> None:
    logdrivers.validate(log_config("none", anything="x"))
    assert logdrivers.limits(log_config("local")) == logdrivers.LogLimits(20 << 20, 5, True)
    assert logdrivers.limits(log_config("json-file")) == logdrivers.LogLimits(0, 1, False)
    assert logdrivers.limits(log_config("json-file", **{"max-size": "1.5k", "max-file": "3",
                                                         "compress": "true"})) == \
        logdrivers.LogLimits(1536, 3, True)


def test_syslog_address_and_facility() -> None:
    assert logdrivers.syslog_address("udp://10.0.0.1") == ("udp", ("10.0.0.1", 514))
    assert logdrivers.syslog_address("tcp://[::1]:6514") == ("tcp", ("::1", 6514))
    assert logdrivers.syslog_facility("local7") == 23 << 3
    assert logdrivers.syslog_facility("5") == 5 << 3
    with pytest.raises(InvalidArgument, match="stat /nowhere/sock"):
        logdrivers.syslog_address("unix:///nowhere/sock")


def test_extra_attributes_and_tag() -> None:
    config = container_pb2.ContainerConfig(image="busybox", labels={"a": "1", "zone": "eu"},
                                           env=["B=2", "PATH=/bin"])
    options = log_config("json-file", labels="a,missing", **{"env-regex": "^P", "tag": "x"})
    assert logdrivers.extra_attributes(options, config, "rendered") == {
        "a": "1", "PATH": "/bin", "tag": "rendered"}
    assert logdrivers.render_tag("{{.Name}}/{{.ID}}", config, "f" * 64, "/web", "sha256:ab") \
        == f"web/{'f' * 12}"


def test_syslog_formats() -> None:
    line = logs.LogLine("stderr", b"boom\n", 0)
    one, other = socket.socketpair()
    with one, other:
        formats = {name: syslogship.SyslogSink(one, "host:1", 16 << 3, name, "app").message(line)
                   for name in ("rfc5424", "rfc5424micro", "rfc3164", "")}
    assert re.fullmatch(rb"<131>1 \S+:\d\d[+-]\d\d:\d\d host:1 app \d+ app - boom\n",
                        formats["rfc5424"])
    assert re.fullmatch(rb"<131>1 \S+\.\d{6}[+-]\d\d:\d\d host:1 app \d+ app - boom\n",
                        formats["rfc5424micro"])
    assert re.fullmatch(rb"<131>\w{3} [ \d]\d \d\d:\d\d:\d\d host:1 app\[\d+\]: boom\n",
                        formats["rfc3164"])
    assert re.fullmatch(rb"<131>\w{3} [ \d]\d \d\d:\d\d:\d\d app\[\d+\]: boom\n", formats[""])


def test_platform_check() -> None:
    amd64 = {"os": "linux", "architecture": "amd64"}
    arm64 = {"os": "linux", "architecture": "arm64"}
    platforms.require("x", amd64, "linux/amd64")
    platforms.require("x", arm64, "linux/arm64/v8")
    platforms.require("x", {"os": "linux", "architecture": "x86_64"}, "linux/amd64")
    with pytest.raises(NotFound, match=re.escape(
            "image with reference x was found but its platform (linux/amd64) does not match "
            "the specified platform (linux/arm64/v8)")):
        platforms.require("x", amd64, "linux/arm64/v8")


def image(history: list[dict], diff_ids: list[str]) -> dict:
    return {"history": history, "rootfs": {"type": "layers", "diff_ids": diff_ids}}


def test_cache_from_history_match() -> None:
    base = [{"created_by": "ADD rootfs"}]
    parent = image(base, ["sha256:a"])
    target = image([*base, {"created_by": "ENV A=1", "empty_layer": True},
                    {"created_by": "RUN x"}], ["sha256:a", "sha256:b"])
    assert cache_from._valid_parent(target, parent)
    assert cache_from._valid_parent(target, None)
    assert not cache_from._valid_parent(target, image([{"created_by": "other"}], ["sha256:a"]))
    assert cache_from._layer_at(target, 1) == ""
    assert cache_from._layer_at(target, 2) == "sha256:b"
