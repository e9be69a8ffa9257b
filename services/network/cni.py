"""The CNI plugin chain that wires pod sandboxes (CNI spec 1.0.0, 0.4.0, 0.3.x).

There is no maintained Python CNI library, so this module speaks the spec's
protocol itself: the first network config of the config directory (by file
name; a .conflist or a single-plugin .conf), each plugin an executable found
in the plugin directories, run with the CNI_* environment and its config on
stdin; ADD runs the chain in order, each plugin getting the previous one's
result as prevResult; CHECK and DEL get the final result of ADD, DEL in
reverse order. As libcni does, every attachment is cached (here under the
network service's data root) with the config and arguments ADD used, so DEL
undoes exactly what ADD did, after a restart or a config change too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import BerthError, Conflict, Internal, InvalidArgument

log = logging.getLogger("berth.network.cni")

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CONFIG_SUFFIXES = (".conflist", ".conf", ".json")
POD_IFNAME = "eth0"
# CNI's own error codes that mean the node's network config is wrong.
CONFIG_ERROR_CODES = {1, 2, 6, 7}
_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[dict, ...]
    disable_check: bool = False
    source: str = ""              # the file it was read from

    @property
    def supports_check(self) -> bool:
        return _version(self.cni_version) >= (0, 4, 0) and not self.disable_check

    def to_json(self) -> dict:
        return {"name": self.name, "cniVersion": self.cni_version,
                "disableCheck": self.disable_check, "plugins": list(self.plugins)}


def parse_config(text: str, source: str) -> NetworkConfigList:
    """A .conflist, or a .conf holding one plugin (made a list of one, as libcni does)."""
    def invalid(reason: str) -> Conflict:
        return Conflict(f"invalid CNI network config {source}: {reason}")

    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise invalid(str(exc)) from exc
    if not isinstance(raw, dict):
        raise invalid("not a JSON object")
    plugins = raw.get("plugins", [raw])
    name, version = raw.get("name"), raw.get("cniVersion")
    if not isinstance(name, str) or not name:
        raise invalid("no network name")
    if version not in SUPPORTED_VERSIONS:
        raise invalid(f"cniVersion {version!r} is not one of {', '.join(SUPPORTED_VERSIONS)}")
    if not isinstance(plugins, list) or not plugins:
        raise invalid("no plugins")
    for plugin in plugins:
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str) \
                or not plugin["type"]:
            raise invalid("a plugin without a type")
    return NetworkConfigList(name=name, cni_version=version, plugins=tuple(plugins),
                             disable_check=bool(raw.get("disableCheck", False)),
                             source=source)


def load_config(conf_dir: Path) -> NetworkConfigList:
    """The first network config in `conf_dir` by file name."""
    try:
        files = sorted(p for p in conf_dir.iterdir()
                       if p.suffix in CONFIG_SUFFIXES and p.is_file())
    except OSError:
        files = []
    if not files:
        raise Conflict(f"no CNI network config found in {conf_dir}")
    try:
        text = files[0].read_text()
    except OSError as exc:
        raise Conflict(f"cannot read CNI network config {files[0]}: {exc}") from exc
    return parse_config(text, str(files[0]))


def validate_container_id(container_id: str) -> None:
    """The spec's rule for CNI_CONTAINERID (it also names the cache file)."""
    if not _CONTAINER_ID.match(container_id):
        raise InvalidArgument(f"invalid CNI container ID {container_id!r}")


def validate_cni_arg(what: str, value: str) -> None:
    """A value CNI_ARGS carries: a ';' or '=' in it would add arguments of
    its own (IP=... picks the pod's address in host-local)."""
    if any(c in value for c in ";=\0"):
        raise InvalidArgument(f"invalid pod {what} {value!r}: CNI_ARGS cannot carry ';', "
                              f"'=' or NUL")


def find_plugin(plugin_type: str, bin_dirs: Sequence[Path]) -> Path:
    if "/" in plugin_type:
        raise Conflict(f"invalid CNI plugin type {plugin_type!r}")
    for directory in bin_dirs:
        candidate = directory / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise Conflict(f'CNI plugin "{plugin_type}" not found in '
                   f'{", ".join(str(d) for d in bin_dirs)}')


@dataclass
class Attachment:
    """One pod on the CNI network: what ADD, CHECK and DEL are called with."""

    container_id: str             # the pod sandbox ID
    netns: str
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    port_mappings: list[dict] = field(default_factory=list)   # portMappings capability
    ifname: str = POD_IFNAME

    def cni_args(self) -> str:
        return ";".join([
            "IgnoreUnknown=1", f"K8S_POD_NAMESPACE={self.pod_namespace}",
            f"K8S_POD_NAME={self.pod_name}", f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}",
            f"K8S_POD_UID={self.pod_uid}"])

    def capability_args(self) -> dict:
        return {"portMappings": self.port_mappings}


@dataclass(frozen=True)
class PodAddress:
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: str
    ifname: str
    mac: str


@dataclass(frozen=True)
class Dns:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class CniResult:
    network: str
    addresses: tuple[PodAddress, ...]   # the pod's own, IPv4 first
    dns: Dns


def parse_result(network: str, raw: dict) -> CniResult:
    """The pod's addresses and DNS of a 0.3.x/0.4.0/1.0.0 result.

    Addresses on interfaces outside the pod (no `sandbox`) are the host's
    and left out; an address naming no interface is taken as the pod's.
    """
    def invalid(reason: str) -> Internal:
        return Internal(f"invalid result of CNI network {network}: {reason}")

    if not isinstance(raw, dict):
        raise invalid("not a JSON object")
    interfaces = raw.get("interfaces") or []
    addresses = []
    for entry in raw.get("ips") or []:
        try:
            address = ipaddress.ip_interface(entry["address"])
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid(f"bad IP entry {entry!r}") from exc
        index = entry.get("interface")
        interface = interfaces[index] if isinstance(index, int) and \
            0 <= index < len(interfaces) else None
        if interface is not None and not interface.get("sandbox"):
            continue
        interface = interface or {}
        addresses.append(PodAddress(address, entry.get("gateway", ""),
                                    interface.get("name", ""), interface.get("mac", "")))
    addresses.sort(key=lambda a: a.address.version)
    dns = raw.get("dns") or {}
    return CniResult(network, tuple(addresses), Dns(
        tuple(dns.get("nameservers") or ()), dns.get("domain", ""),
        tuple(dns.get("search") or ()), tuple(dns.get("options") or ())))


def plugin_input(config: NetworkConfigList, plugin: dict, prev_result: dict | None,
                 capability_args: dict) -> dict:
    """What one plugin reads on stdin: its config, the network's name and
    version, the previous result, and the runtimeConfig of the capabilities
    it declares."""
    conf = dict(plugin, name=config.name, cniVersion=config.cni_version)
    if prev_result is not None:
        conf["prevResult"] = prev_result
    enabled = {key for key, on in (plugin.get("capabilities") or {}).items() if on}
    runtime = {key: value for key, value in capability_args.items() if key in enabled}
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


def plugin_error(command: str, config: NetworkConfigList, plugin_type: str,
                 returncode: int, stdout: bytes, stderr: bytes) -> BerthError:
    """A plugin's error result ({code, msg, details}) as a domain error."""
    try:
        reply = json.loads(stdout)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and "msg" in reply:
        code, reason = reply.get("code", 0), str(reply["msg"])
        if reply.get("details"):
            reason += f": {reply['details']}"
    else:
        code = 0
        reason = stderr.decode(errors="replace").strip() or f"exit status {returncode}"
    message = (f'CNI plugin "{plugin_type}" failed ({command} on network "{config.name}"): '
               f"{reason}" + (f" (CNI error code {code})" if code else ""))
    return Conflict(message) if code in CONFIG_ERROR_CODES else Internal(message)


class ResultCache:
    """Each attachment's config, arguments and result, one JSON file per sandbox.

    Written before ADD runs (without a result), so that a failed or
    interrupted ADD can still be undone with the same config.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, container_id: str) -> Path:
        return self.directory / f"{container_id}.json"

    def save(self, attachment: Attachment, config: NetworkConfigList,
             result: dict | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"kind": "cniCacheV1", "containerId": attachment.container_id,
                 "ifName": attachment.ifname, "netns": attachment.netns,
                 "cniArgs": attachment.cni_args(),
                 "capabilityArgs": attachment.capability_args(),
                 "config": config.to_json(), "result": result}
        path = self._path(attachment.container_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(entry))
        temporary.replace(path)

    def load(self, container_id: str) -> dict | None:
        try:
            return json.loads(self._path(container_id).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("unreadable CNI cache entry of %s: %s", container_id, exc)
            return None

    def remove(self, container_id: str) -> None:
        self._path(container_id).unlink(missing_ok=True)


@dataclass(frozen=True)
class _Call:
    """One run of the chain: the command and the environment it shares."""

    command: str
    container_id: str
    netns: str
    ifname: str
    cni_args: str
    capability_args: dict


class CniRunner:
    def __init__(self, conf_dir: Path, bin_dirs: Sequence[Path], cache_dir: Path) -> None:
        self.conf_dir = conf_dir
        self.bin_dirs = tuple(bin_dirs)
        self.cache = ResultCache(cache_dir)

    def status(self) -> str:
        """Why pods cannot be networked now, or "" when they can."""
        try:
            config = load_config(self.conf_dir)
            for plugin in config.plugins:
                find_plugin(plugin["type"], self.bin_dirs)
        except BerthError as exc:
            return exc.message
        return ""

    async def add(self, attachment: Attachment) -> CniResult:
        validate_container_id(attachment.container_id)
        config = load_config(self.conf_dir)
        plugins = [(find_plugin(p["type"], self.bin_dirs), p) for p in config.plugins]
        self.cache.save(attachment, config, None)
        call = _Call("ADD", attachment.container_id, attachment.netns, attachment.ifname,
                     attachment.cni_args(), attachment.capability_args())
        result: dict | None = None
        for path, plugin in plugins:
            result = await self._run(call, config, path, plugin, result)
            if result is None:
                raise Internal(f'CNI plugin "{plugin["type"]}" returned no result '
                               f'(ADD on network "{config.name}")')
        self.cache.save(attachment, config, result)
        return parse_result(config.name, result)

    def cached_result(self, container_id: str) -> CniResult | None:
        entry = self.cache.load(container_id)
        if entry is None or entry.get("result") is None:
            return None
        return parse_result(entry["config"]["name"], entry["result"])

    async def check(self, container_id: str) -> None:
        """CHECK the attachment against its cached result (spec 0.4.0 on)."""
        entry = self.cache.load(container_id)
        if entry is None or entry.get("result") is None:
            raise Conflict(f"no CNI result cached for {container_id}")
        config = parse_config(json.dumps(entry["config"]), "cache")
        if not config.supports_check:
            return
        call = self._cached_call("CHECK", entry)
        for plugin in config.plugins:
            await self._run(call, config, find_plugin(plugin["type"], self.bin_dirs), plugin,
                            entry["result"])

    async def delete(self, container_id: str) -> None:
        """DEL through every plugin, last first, then forget the attachment.

        Idempotent: an attachment never made (or already deleted) is no error.
        Every plugin is tried; the first failure is raised after the others.
        """
        entry = self.cache.load(container_id)
        if entry is None:
            return
        config = parse_config(json.dumps(entry["config"]), "cache")
        prev = entry.get("result") if _version(config.cni_version) >= (0, 4, 0) else None
        call = self._cached_call("DEL", entry)
        errors: list[BerthError] = []
        for plugin in reversed(config.plugins):
            try:
                await self._run(call, config, find_plugin(plugin["type"], self.bin_dirs),
                                plugin, prev)
            except BerthError as exc:
                errors.append(exc)
        self.cache.remove(container_id)
        if errors:
            raise errors[0]

    @staticmethod
    def _cached_call(command: str, entry: dict) -> _Call:
        return _Call(command, entry["containerId"], entry["netns"], entry["ifName"],
                     entry["cniArgs"], entry["capabilityArgs"])

    def _environment(self, call: _Call) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        return inherited | {
            "CNI_COMMAND": call.command, "CNI_CONTAINERID": call.container_id,
            "CNI_NETNS": call.netns, "CNI_IFNAME": call.ifname, "CNI_ARGS": call.cni_args,
            "CNI_PATH": os.pathsep.join(str(d) for d in self.bin_dirs)}

    async def _run(self, call: _Call, config: NetworkConfigList, path: Path, plugin: dict,
                   prev_result: dict | None) -> dict | None:
        """One plugin: its result (None when it prints none, as DEL and CHECK do)."""
        stdin = json.dumps(plugin_input(config, plugin, prev_result, call.capability_args))
        process = await asyncio.create_subprocess_exec(
            str(path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._environment(call))
        try:
            stdout, stderr = await process.communicate(stdin.encode())
        except BaseException:
            # Cancelled (the caller gave up): leave no plugin running.
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise plugin_error(call.command, config, plugin["type"], process.returncode,
                               stdout, stderr)
        if not stdout.strip():
            return None
        try:
            return json.loads(stdout)
        except ValueError as exc:
            raise Internal(f'CNI plugin "{plugin["type"]}" printed an invalid result '
                           f'({call.command} on network "{config.name}"): {exc}') from exc
