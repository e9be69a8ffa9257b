"""Log drivers (HostConfig.LogConfig): Docker's names and options, checked
at create with Docker's messages, and what each one means for the log that
conmon keeps.

Every driver but `none` keeps conmon's k8s-file log: it is the file of
`json-file` and `local` (`docker logs` reads it; `local` has Docker's
defaults of 20m x 5 files, compressed), and what `docker logs` reads for
`syslog` and `journald`: Docker's dual-logging cache for syslog, which it
cannot read back; Docker reads journald's lines back from the journal,
berth from this file, which holds the same lines. The service ships
`syslog` lines (`syslogship.py`) and `journald` ones (`journalship.py`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from berth.container.v1 import container_pb2
from services.common import goregexp
from services.common.errors import InvalidArgument

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

_COMMON_OPTS = frozenset({"env", "env-regex", "labels", "labels-regex", "tag"})
_BUILTIN_OPTS = frozenset({"mode", "max-buffer-size"})
_DRIVER_OPTS = {
    "json-file": _COMMON_OPTS | {"max-file", "max-size", "compress"},
    "local": _COMMON_OPTS | {"max-file", "max-size", "compress"},
    "syslog": _COMMON_OPTS | {"syslog-address", "syslog-facility", "syslog-tls-ca-cert",
                              "syslog-tls-cert", "syslog-tls-key", "syslog-tls-skip-verify",
                              "syslog-format"},
    "journald": _COMMON_OPTS,
    "none": frozenset(),
    # berth's own, for the CRI: conmon's log at the kubelet's path.
    "k8s-file": frozenset({"path", "max-size", "max-file"}),
}
# The kept log of syslog and journald: Docker's dual-logging cache's limits.
_CACHE_LIMITS = (20 << 20, 5, True)
_LOCAL_DEFAULTS = (20 << 20, 5, True)
SYSLOG_FACILITIES = {
    name: number << 3 for number, name in enumerate(
        ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
         "authpriv", "ftp", "", "", "", "", "local0", "local1", "local2", "local3", "local4",
         "local5", "local6", "local7"]) if name}
SYSLOG_FORMATS = ("", "rfc3164", "rfc5424", "rfc5424micro")
SYSLOG_SCHEMES = ("unix", "unixgram", "udp", "tcp", "tcp+tls")


@dataclass(frozen=True)
class LogLimits:
    max_size: int        # bytes; 0: no limit
    max_files: int
    compress: bool       # gzip the rotated files


def validate(log_config: container_pb2.LogConfig) -> None:
    """Docker's create-time check of LogConfig (logger.ValidateLogOpts)."""
    driver, options = log_config.type or "json-file", dict(log_config.config)
    if driver == "none":
        return
    if options.get("mode", "") not in ("", "blocking", "non-blocking"):
        raise InvalidArgument(f"logger: logging mode not supported: {options['mode']}")
    if "max-buffer-size" in options and options.get("mode") != "non-blocking":
        raise InvalidArgument(
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'")
    if driver not in _DRIVER_OPTS:
        raise InvalidArgument(f"logger: no log driver named '{driver}' is registered")
    for key in options:
        if key not in _BUILTIN_OPTS and key not in _DRIVER_OPTS[driver]:
            raise InvalidArgument(_unknown_option(driver, key))
    if driver == "syslog":
        syslog_address(options.get("syslog-address", ""))
        syslog_facility(options.get("syslog-facility", ""))
        if options.get("syslog-format", "") not in SYSLOG_FORMATS:
            raise InvalidArgument("Invalid syslog format")
    log_file(log_config)
    render_tag(options.get("tag", ""), container_pb2.ContainerConfig(), "", "", "")
    for key in ("labels-regex", "env-regex"):
        try:
            goregexp.compile(options.get(key, ""))
        except goregexp.GoRegexpError as exc:
            raise InvalidArgument(f"error parsing regexp: {exc}") from None
    limits(log_config)


def extra_attributes(log_config: container_pb2.LogConfig,
                     config: container_pb2.ContainerConfig, tag: str) -> dict[str, str]:
    """What `docker logs --details` shows before each line (moby's
    Info.ExtraAttributes): the labels and env variables the options name or
    match, and the rendered `tag` when one is set; for journald, whose lines
    Docker reads back from the journal, the attributes' journal fields."""
    if log_config.type == "journald":
        return journal_attributes(log_config, config)
    extra = _named_attributes(log_config, config)
    if log_config.config.get("tag"):
        extra["tag"] = tag
    return extra


def journal_attributes(log_config: container_pb2.LogConfig,
                       config: container_pb2.ContainerConfig) -> dict[str, str]:
    """The labels and env variables the options name or match, as the journal
    fields Docker's journald driver sends them in."""
    return {journal_field(name): value
            for name, value in _named_attributes(log_config, config).items()}


def journal_field(name: str) -> str:
    """moby's journald sanitizeKeyMod: letters upper-cased, any other
    character but a digit an underscore, no leading underscore."""
    field = ""
    for char in name:
        if "a" <= char <= "z":
            char = char.upper()
        elif not ("A" <= char <= "Z" or "0" <= char <= "9"):
            char = "_"
        if field or char != "_":
            field += char
    return field


def _named_attributes(log_config: container_pb2.LogConfig,
                      config: container_pb2.ContainerConfig) -> dict[str, str]:
    """The labels and env variables the options name or match."""
    options = log_config.config
    labels = dict(config.labels)
    env = dict(item.split("=", 1) for item in config.env if "=" in item)
    extra: dict[str, str] = {}
    for names, source in ((options.get("labels", ""), labels), (options.get("env", ""), env)):
        for name in filter(None, names.split(",")):
            if name in source:
                extra[name] = source[name]
    for key, source in (("labels-regex", labels), ("env-regex", env)):
        if options.get(key):
            pattern = goregexp.compile(options[key])
            extra.update({k: v for k, v in source.items() if pattern.search(k)})
    return extra


def _unknown_option(driver: str, key: str) -> str:
    if driver == "local":
        return f"unknown log opt '{key}' for log driver local"
    return f"unknown log opt '{key}' for {driver} log driver"


def log_file(log_config: container_pb2.LogConfig) -> Path | None:
    """Where a k8s-file LogConfig (the CRI's log format, which conmon writes
    anyway) puts the log; None for the others (the bundle's own file)."""
    if log_config.type != "k8s-file":
        return None
    path = log_config.config.get("path", "")
    if not path.startswith("/"):
        raise InvalidArgument(f"log driver k8s-file needs an absolute path option: {path!r}")
    return Path(path)


def limits(log_config: container_pb2.LogConfig) -> LogLimits:
    """How the kept log rotates: the user's options, else the driver's defaults."""
    driver, options = log_config.type or "json-file", log_config.config
    if driver in ("syslog", "journald"):
        return LogLimits(*_CACHE_LIMITS)
    if driver == "local":
        return _local_limits(options)
    max_size = -1
    if "max-size" in options:
        max_size = _bytes(options["max-size"])
        if max_size <= 0:
            raise InvalidArgument("max-size must be a positive number")
    max_files = _integer(options.get("max-file", "1"), "max-file")
    if max_files < 1:
        raise InvalidArgument("max-file cannot be less than 1")
    compress = _boolean(options.get("compress", "false"), "compress")
    if compress and (max_files == 1 or max_size == -1):
        raise InvalidArgument(
            "compress cannot be true when max-file is less than 2 or max-size is not set")
    return LogLimits(max(max_size, 0), max_files, compress)


def _local_limits(options: dict[str, str] | object) -> LogLimits:
    max_size, max_files, compress = _LOCAL_DEFAULTS
    if "max-size" in options:
        max_size = _bytes(options["max-size"])
        if max_size < 0:
            raise InvalidArgument("max-size must not be negative")
    if "max-file" in options:
        max_files = _integer(options["max-file"], "max-file")
        if max_files < 0:
            raise InvalidArgument("max-file must not be negative")
    if "compress" in options:
        compress = _boolean(options["compress"], "compress")
    if compress and max_files <= 1:
        raise InvalidArgument("compression cannot be enabled when max file count is 1")
    return LogLimits(max_size, max(max_files, 1), compress)


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {text}") from None


def _boolean(text: str, name: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise InvalidArgument(f"invalid boolean value for {name}: {text}")


def _bytes(size: str) -> int:
    """Docker's human sizes (10m, 1g, 512k, 100, 1.5MB) -> bytes."""
    match = re.fullmatch(r"\s*(-?[0-9.]+)\s*([kmgtp]?)i?b?\s*", size.lower())
    if not match:
        raise InvalidArgument(f"invalid size: '{size}'")
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    try:
        return int(float(match.group(1)) * units[match.group(2)])
    except ValueError:
        raise InvalidArgument(f"invalid size: '{size}'") from None


def syslog_address(address: str) -> tuple[str, str | tuple[str, int]]:
    """syslog-address -> (scheme, unix path or (host, port)); ("", "") for the local syslog."""
    if not address:
        return "", ""
    scheme, separator, rest = address.partition("://")
    if not separator or scheme not in SYSLOG_SCHEMES:
        raise InvalidArgument(f"unsupported scheme: '{scheme if separator else ''}'")
    if scheme in ("unix", "unixgram"):
        if not Path(rest).exists():
            raise InvalidArgument(f"stat {rest}: no such file or directory")
        return scheme, rest
    if scheme == "tcp+tls":
        raise InvalidArgument("syslog over tcp+tls is not supported by berth")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not port.isdigit():
        host, port = rest.rstrip("/"), "514"
    return scheme, (host.strip("[]"), int(port))


def syslog_facility(facility: str) -> int:
    """syslog-facility (a name or 0..23) -> the facility's bits of the priority."""
    if not facility:
        return SYSLOG_FACILITIES["daemon"]
    if facility in SYSLOG_FACILITIES:
        return SYSLOG_FACILITIES[facility]
    if facility.isdigit() and 0 <= int(facility) <= 23:
        return int(facility) << 3
    raise InvalidArgument("invalid syslog facility")


def shipped_tag(options: dict[str, str], container: container_pb2.ContainerConfig, cid: str,
                name: str, image_id: str) -> str:
    """The tag the syslog and journald drivers send: the `tag` option's
    template, `{{.ID}}` by default."""
    return render_tag(options.get("tag") or "{{.ID}}", container, cid, name, image_id)


def render_tag(template: str, container: container_pb2.ContainerConfig, cid: str, name: str,
               image_id: str) -> str:
    """Docker's log tag template ({{.ID}}, {{.Name}}, {{.ImageName}}, ...)."""
    bare_image_id = image_id.removeprefix("sha256:")
    fields = {
        "ID": cid[:12], "FullID": cid, "Name": name.lstrip("/"),
        "Command": " ".join([*container.entrypoint.values, *container.cmd.values]),
        "ImageID": bare_image_id[:12], "ImageFullID": image_id, "ImageName": container.image,
        "Hostname": container.hostname, "DaemonName": "docker",
    }

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in fields:
            raise InvalidArgument(f'template: log-tag: can\'t evaluate field {key}')
        return fields[key]

    return re.sub(r"\{\{\s*\.(\w+)\s*\}\}", substitute, template)
