"""Docker's image config JSON (the `config` object of an image config blob)
to and from the typed ImageConfig message."""

from __future__ import annotations

from typing import Any

from berth.image.v1 import image_pb2

# Docker JSON key -> ImageConfig field, for plain strings and booleans.
_SCALARS = {
    "Hostname": "hostname", "Domainname": "domainname", "User": "user",
    "AttachStdin": "attach_stdin", "AttachStdout": "attach_stdout",
    "AttachStderr": "attach_stderr", "Tty": "tty", "OpenStdin": "open_stdin",
    "StdinOnce": "stdin_once", "ArgsEscaped": "args_escaped", "Image": "image",
    "WorkingDir": "working_dir", "StopSignal": "stop_signal",
}
_LISTS = {"Env": "env", "OnBuild": "on_build", "Shell": "shell"}
_OPTIONAL_LISTS = {"Cmd": "cmd", "Entrypoint": "entrypoint"}
_SETS = {"ExposedPorts": "exposed_ports", "Volumes": "volumes"}
_OMIT_EMPTY = ("ExposedPorts", "ArgsEscaped", "StopSignal", "Shell")
_HEALTH_DURATIONS = {"Interval": "interval_ns", "Timeout": "timeout_ns",
                     "StartPeriod": "start_period_ns", "StartInterval": "start_interval_ns"}


def config_from_json(data: dict[str, Any] | None) -> image_pb2.ImageConfig:
    data = data or {}
    config = image_pb2.ImageConfig()
    for key, field in _SCALARS.items():
        if data.get(key) is not None:
            setattr(config, field, data[key])
    for key, field in _LISTS.items():
        getattr(config, field).extend(data.get(key) or [])
    for key, field in _OPTIONAL_LISTS.items():
        value = data.get(key)
        if isinstance(value, str):
            value = [value]
        if value is not None:
            getattr(config, field).values.extend(value)
            getattr(config, field).SetInParent()
    for key, field in _SETS.items():
        getattr(config, field).extend(sorted(data.get(key) or {}))
    config.labels.update(data.get("Labels") or {})
    health = data.get("Healthcheck")
    if health:
        if health.get("Test") is not None:
            config.healthcheck.test.values.extend(health["Test"])
            config.healthcheck.test.SetInParent()
        for key, field in _HEALTH_DURATIONS.items():
            setattr(config.healthcheck, field, health.get(key) or 0)
        config.healthcheck.retries = health.get("Retries") or 0
    return config


def config_to_json(config: image_pb2.ImageConfig) -> dict[str, Any]:
    """Docker's container-config shape: every key present, as dockerd writes it."""
    data: dict[str, Any] = {key: getattr(config, field) for key, field in _SCALARS.items()}
    for key, field in _LISTS.items():
        data[key] = list(getattr(config, field)) or None
    for key, field in _OPTIONAL_LISTS.items():
        data[key] = (list(getattr(config, field).values)
                     if config.HasField(field) else None)
    for key, field in _SETS.items():
        data[key] = {item: {} for item in getattr(config, field)} or None
    data["Labels"] = dict(config.labels) or None
    if config.HasField("healthcheck"):
        health = config.healthcheck
        data["Healthcheck"] = {"Test": list(health.test.values) or None}
        for key, field in _HEALTH_DURATIONS.items():
            if getattr(health, field):
                data["Healthcheck"][key] = getattr(health, field)
        if health.retries:
            data["Healthcheck"]["Retries"] = health.retries
    for key in _OMIT_EMPTY:  # omitempty in dockerd's JSON
        if not data.get(key):
            data.pop(key, None)
    return data
