"""The engine config file: dockerd's checks and what a reload changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.engine_config import read_engine_config, reloaded, setting
from services.common.errors import InvalidArgument


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(document))
    return path


def test_no_file_is_no_settings_and_the_defaults_apply() -> None:
    assert read_engine_config(None) == {}
    assert setting({}, "labels") == []
    assert setting({}, "debug") is False
    assert setting({}, "max-concurrent-downloads") == 3
    assert setting({"max-concurrent-uploads": 0}, "max-concurrent-uploads") == 5


def test_keys_berth_does_not_use_are_left_alone(tmp_path: Path) -> None:
    document = {"log-driver": "json-file", "labels": ["a=1"], "max-concurrent-uploads": None}
    assert read_engine_config(_write(tmp_path, document)) == document


@pytest.mark.parametrize(("document", "message"), [
    ({"labels": ["nokey"]}, "bad attribute format: nokey"),
    ({"labels": ["a=1", "a=2"]}, "conflict labels for a=1 and a=2"),
    ({"labels": "a=1"}, 'invalid value for labels: "a=1" (expected a list)'),
    ({"debug": "yes"}, 'invalid value for debug: "yes" (expected true or false)'),
    ({"max-concurrent-downloads": -1}, "invalid max concurrent downloads: -1"),
    ({"max-concurrent-uploads": True}, "invalid value for max-concurrent-uploads: true"),
    ({"insecure-registries": ["http://reg:5000"]},
     "insecure registry http://reg:5000 should not contain '://'"),
    ({"insecure-registries": ["reg/x"]}, "insecure registry reg/x is not valid"),
    ({"registry-mirrors": ["mirror.example"]},
     'invalid mirror: unsupported scheme "" in "mirror.example"'),
    ({"registry-mirrors": ["https://mirror.example/v2"]},
     'invalid mirror: path, query, or fragment at end of the URI "https://mirror.example/v2"'),
])
def test_invalid_settings_are_refused_with_dockerd_messages(
        tmp_path: Path, document: dict, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        read_engine_config(_write(tmp_path, document))
    assert refused.value.message.startswith(f"file configuration validation failed: {message}")


def test_a_file_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    path.write_text('{"debug": ')
    with pytest.raises(InvalidArgument, match="unable to configure the engine with file"):
        read_engine_config(path)
    with pytest.raises(InvalidArgument, match="must hold a JSON object"):
        read_engine_config(_write(tmp_path, ["debug"]))
    with pytest.raises(InvalidArgument, match="unable to configure"):
        read_engine_config(tmp_path / "missing.json")


def test_a_reload_changes_only_the_reloadable_keys_as_dockerd() -> None:
    current = {"runtime": "runc", "labels": ["a=1"], "debug": True,
               "insecure-registries": ["10.0.0.0/8"], "max-concurrent-downloads": 7}
    after = reloaded(current, {"runtime": "crun", "labels": ["b=2"]})
    # Not reloadable: needs a restart.
    assert after["runtime"] == "runc"
    assert after["labels"] == ["b=2"]
    # Absent from the new file: kept, except the transfer limits, which reset.
    assert after["debug"] is True
    assert after["insecure-registries"] == ["10.0.0.0/8"]
    assert setting(after, "max-concurrent-downloads") == 3
    assert current["labels"] == ["a=1"]
