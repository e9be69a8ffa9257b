"""Networks: the built-in ones, create, remove, list and prune, and lookup by
ID, name or ID prefix. Callers hold the manager's lock for changes."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime

from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.common.events import EventBus
from services.common.filters import Filters, timestamp_ns
from services.common.validation import (
    RESTRICTED_NAME_CHARS,
    is_interface_name,
    is_restricted_name,
)
from services.network import ipam, kernel, wiring_macvlan
from services.network.specs import (
    HOST_BINDING_OPTION,
    ICC_OPTION,
    MASQUERADE_OPTION,
    MTU_OPTION,
    NAME_OPTION,
    NetworkSpec,
    bool_option,
    new_id,
)
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore
from services.network.wiring import KernelWiring

LIST_FILTERS = {"name", "id", "label", "driver", "type", "dangling", "scope"}
DRIVERS = ("bridge", *wiring_macvlan.DRIVERS)
NOT_A_SWARM_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or '
                       '"docker swarm join" to connect this node to swarm and try again.')
PRUNE_FILTERS = {"label", "label!", "until"}
# What the kernel takes as a link's MTU (IPv4's minimum, a u16 in netlink).
MIN_MTU, MAX_MTU = 68, 65535


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Networks:
    def __init__(self, prefix: str, store: NetworkStore, events: EventBus,
                 wiring: KernelWiring) -> None:
        self.prefix = prefix
        self.store = store
        self.events = events
        self.wiring = wiring

    # -- service start and stop ---------------------------------------------

    async def bring_up(self) -> None:
        """The built-in networks and every bridge."""
        self._ensure_builtin()
        for network in self.store.networks():
            if not network.config_only:
                await self.wiring.bring_up(network)

    async def take_down_unused(self) -> None:
        """Delete the bridges no running container uses; their records stay."""
        for network in self.store.networks():
            if network.driver == "bridge" and not self.in_use(network.id):
                await self.wiring.delete_bridge(network)

    def _ensure_builtin(self) -> None:
        names = {n.name for n in self.store.networks()}
        if "bridge" not in names:
            bridge = f"{self.prefix}0"
            self.store.save_network(NetworkRecord(
                id=new_id(), name="bridge", driver="bridge", created=_now(), bridge=bridge,
                builtin=True, options={
                    "com.docker.network.bridge.default_bridge": "true",
                    ICC_OPTION: "true",
                    MASQUERADE_OPTION: "true",
                    HOST_BINDING_OPTION: "0.0.0.0",
                    NAME_OPTION: bridge,
                    MTU_OPTION: "1500"}))
        if "host" not in names:
            self.store.save_network(NetworkRecord(
                id=new_id(), name="host", driver="host", created=_now(), builtin=True))
        if "none" not in names:
            self.store.save_network(NetworkRecord(
                id=new_id(), name="none", driver="null", created=_now(), builtin=True))

    # -- lookup -------------------------------------------------------------

    def find(self, ref: str) -> NetworkRecord:
        """By full ID, then name, then unique ID prefix, as Docker looks up.

        "default" is the docker CLI's name for the default network mode.
        """
        ref = "bridge" if ref == "default" else ref
        networks = self.store.networks()
        for network in networks:
            if network.id == ref:
                return network
        for network in networks:
            if network.name == ref:
                return network
        matches = [n for n in networks if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network {ref} is ambiguous ({len(matches)} matches found "
                                  f"based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def containers_of(self, network: NetworkRecord) -> list[EndpointRecord]:
        return [e for e in self.store.endpoints(network_id=network.id) if e.wired]

    def in_use(self, network_id: str) -> bool:
        return any(e.wired for e in self.store.endpoints(network_id=network_id))

    # -- create -------------------------------------------------------------

    @staticmethod
    def check_driver(spec: NetworkSpec) -> None:
        """Docker's refusals of a create request, as a dockerd outside a swarm."""
        if not spec.name:
            raise InvalidArgument("network name is required")
        if not is_restricted_name(spec.name):
            raise InvalidArgument(f'invalid network name "{spec.name}": only '
                                  f"{RESTRICTED_NAME_CHARS} are allowed")
        driver = spec.driver or "bridge"
        if driver == "overlay":
            raise PermissionDenied(NOT_A_SWARM_MANAGER)
        if spec.config_only:
            return
        if driver in ("host", "null"):
            raise PermissionDenied(f'only one instance of "{driver}" network is allowed')
        if driver not in DRIVERS:
            raise NotFound(f'plugin "{driver}" not found')
        if spec.ingress:
            raise PermissionDenied("Ingress network can only be global scope network")
        if spec.scope == "swarm":
            raise PermissionDenied("cannot create a swarm scoped network when swarm is not "
                                   "active")
        if spec.scope not in ("", "local"):
            raise InvalidArgument(f"invalid scope {spec.scope}: only local networks exist "
                                  f"outside a swarm")
        if not spec.enable_ipv4 and not spec.enable_ipv6:
            raise InvalidArgument("IPv4 or IPv6 must be enabled")
        if not spec.enable_ipv4 and driver != "bridge":
            raise InvalidArgument(f"IPv4 cannot be disabled on a {driver} network here")
        if driver in wiring_macvlan.DRIVERS:
            wiring_macvlan.check_options(driver, spec.options)

    async def create(self, spec: NetworkSpec) -> NetworkRecord:
        """A network (check_driver has passed); undone whole on failure."""
        if any(n.name == spec.name for n in self.store.networks()):
            raise AlreadyExists(f"network with name {spec.name} already exists")
        if spec.config_only:
            network = self._new_record(spec, "null")
            network.config_only = True
            self.store.save_network(network)
        else:
            source = self._apply_config_from(spec)
            driver = spec.driver or "bridge"
            network = self._new_record(spec, driver)
            network.config_from = source.id if source else ""
            if driver == "bridge":
                await self._check_bridge_name(network)
                await self._bring_up_bridge(network)
            else:
                await self._bring_up_sublink(network)
        self.events.publish("create", network.id, {"name": network.name,
                                                   "type": network.driver})
        return network

    def _apply_config_from(self, spec: NetworkSpec) -> NetworkRecord | None:
        """Take IPAM and options from the config-only network the spec names."""
        if not spec.config_from:
            return None
        try:
            source = self.find(spec.config_from)
        except NotFound:
            source = None
        if source is None or not source.config_only:
            raise NotFound(f'configuration network "{spec.config_from}" does not exist')
        if spec.has_own_config:
            raise PermissionDenied("user specified configurations are not supported if the "
                                   "network depends on a configuration network")
        spec.subnet, spec.gateway, spec.ip_range = source.subnet, source.gateway, \
            source.ip_range
        spec.subnet6, spec.gateway6 = source.subnet6, source.gateway6
        spec.aux_addresses, spec.ipam_options = dict(source.aux_addresses), \
            dict(source.ipam_options)
        spec.options = dict(source.options)
        spec.enable_ipv6 = spec.enable_ipv6 or source.enable_ipv6
        return source

    async def _check_bridge_name(self, network: NetworkRecord) -> None:
        """A bridge name the user gave must be a link name no other network of
        ours uses; a host bridge of that name is adopted (never deleted), any
        other host link is refused: its addresses and its life are the host's."""
        if NAME_OPTION not in network.options:
            return
        bridge = network.bridge
        if not is_interface_name(bridge):
            raise InvalidArgument(f'invalid bridge name "{bridge}": a link name has 1 to 15 '
                                  f'characters, none of them "/", ":", NUL or whitespace')
        for other in self.store.networks():
            if other.driver == "bridge" and other.bridge == bridge and not other.config_only:
                raise AlreadyExists(
                    f"cannot create network {network.id} ({bridge}): conflicts with network "
                    f"{other.id} ({other.bridge}): networks have same bridge name")
        kind = await asyncio.to_thread(kernel.link_kind, bridge)
        if kind is not None and kind != "bridge":
            raise InvalidArgument(f"existing interface {bridge} is not a bridge")
        network.bridge_adopted = kind == "bridge"

    async def _bring_up_bridge(self, network: NetworkRecord) -> None:
        created = False
        try:
            await self.wiring.bring_up_bridge(network)
            created = True
            await self.wiring.apply_firewall()
        except BaseException:
            await self.wiring.delete_bridge(network)
            if created:
                self.store.delete_network(network.id)
                await self.wiring.apply_firewall()
            raise

    async def _bring_up_sublink(self, network: NetworkRecord) -> None:
        """A macvlan/ipvlan network: its subnet, then its parent when Docker makes one."""
        wiring_macvlan.check_parent_free(network, self.store.networks())
        if not network.subnet:
            in_use = [ipaddress.IPv4Network(n.subnet) for n in self.store.networks()
                      if n.subnet and not n.config_only]
            subnet = ipam.pick_subnet(in_use)
            network.subnet, network.gateway = str(subnet), ipam.default_gateway(subnet)
        await self.wiring.bring_up_parent(network)
        try:
            self.store.save_network(network)
        except BaseException:
            await self.wiring.delete_parent(network)
            raise

    def _new_record(self, spec: NetworkSpec, driver: str) -> NetworkRecord:
        network_id = new_id()
        options = dict(spec.options)
        mtu = options.get(MTU_OPTION, "")
        if mtu and not mtu.isdigit():
            raise InvalidArgument(f"invalid MTU number: {mtu}")
        if mtu and int(mtu) and not MIN_MTU <= int(mtu) <= MAX_MTU:
            raise InvalidArgument(f"invalid MTU {mtu}: it must be between {MIN_MTU} and "
                                  f"{MAX_MTU}")
        bridge = ""
        if driver == "bridge":
            bridge = options.get(NAME_OPTION) or (
                f"{self.prefix}-" + network_id[:14 - len(self.prefix)])
            if len(bridge) > 15:
                raise InvalidArgument(f"bridge name {bridge} is longer than 15 characters")
        record = NetworkRecord(
            id=network_id, name=spec.name, driver=driver, created=_now(), bridge=bridge,
            internal=spec.internal, attachable=spec.attachable, enable_ipv6=spec.enable_ipv6,
            enable_ipv4=spec.enable_ipv4,
            mtu=int(mtu or 0), icc=bool_option(options.get(ICC_OPTION, "true")),
            options=options, labels=dict(spec.labels), ipam_options=dict(spec.ipam_options),
            aux_addresses=dict(spec.aux_addresses))
        if not spec.enable_ipv4:
            if spec.subnet or spec.gateway or spec.ip_range:
                raise InvalidArgument("invalid network config:\nIPv4 is disabled, it has no "
                                      "IPv4 subnet")
        elif spec.subnet:
            subnet = ipam.parse_subnet(spec.subnet)
            ours = [] if spec.config_only else [
                ipaddress.IPv4Network(n.subnet) for n in self.store.networks()
                if n.subnet and not n.config_only]
            ipam.check_user_pool(subnet, spec.gateway, spec.ip_range, ours)
            record.subnet, record.user_subnet = str(subnet), True
            record.gateway = str(ipam.parse_address(spec.gateway)) if spec.gateway else \
                ipam.default_gateway(subnet)
            record.ip_range = str(ipam.parse_subnet(spec.ip_range)) if spec.ip_range else ""
            ipam.check_aux_addresses(subnet, record.aux_addresses)
        elif spec.gateway or spec.ip_range:
            raise InvalidArgument("invalid network config:\na gateway or ip-range needs "
                                  "a subnet")
        elif spec.aux_addresses:
            raise InvalidArgument("invalid network config:\nauxiliary addresses need a subnet")
        if spec.enable_ipv6 and not spec.config_only:
            self._assign_ipv6(record, spec)
        elif spec.subnet6:
            record.subnet6 = str(ipam.parse_subnet6(spec.subnet6))
            record.gateway6 = spec.gateway6.split("/")[0]
        return record

    def _assign_ipv6(self, record: NetworkRecord, spec: NetworkSpec) -> None:
        """The user's IPv6 subnet, else a random unique local /64."""
        ours = [ipaddress.IPv6Network(n.subnet6) for n in self.store.networks()
                if n.subnet6 and not n.config_only]
        if spec.subnet6:
            subnet6 = ipam.parse_subnet6(spec.subnet6)
            ipam.check_user_pool6(subnet6, spec.gateway6, ours)
            record.user_subnet6 = True
        else:
            subnet6 = ipam.random_ula()
        record.subnet6 = str(subnet6)
        record.gateway6 = spec.gateway6.split("/")[0] if spec.gateway6 else \
            str(subnet6.network_address + 1)

    # -- remove, list, prune ------------------------------------------------

    async def remove(self, ref: str) -> None:
        network = self.find(ref)
        if network.builtin:
            raise PermissionDenied(f"{network.name} is a pre-defined network and cannot "
                                   f"be removed")
        if self.in_use(network.id):
            raise PermissionDenied(f"error while removing network: network {network.name} "
                                   f"id {network.id} has active endpoints")
        self._check_not_config_source(network)
        await self._delete(network)

    def _check_not_config_source(self, network: NetworkRecord) -> None:
        if network.config_only and any(n.config_from == network.id
                                       for n in self.store.networks()):
            raise PermissionDenied(f"error while removing network: configuration network "
                                   f'"{network.name}" is in use')

    async def _delete(self, network: NetworkRecord) -> None:
        await self.wiring.take_down(network)
        self.store.delete_network(network.id)
        await self.wiring.apply_firewall()
        self.events.publish("destroy", network.id, {"name": network.name,
                                                    "type": network.driver})

    def list(self, filters: Filters) -> list[NetworkRecord]:
        filters.checked(LIST_FILTERS)
        for value in filters.get("type"):
            if value not in ("custom", "builtin"):
                raise InvalidArgument(f"invalid filter: 'type'='{value}'")
        dangling = filters.flag("dangling")
        return [n for n in self.store.networks() if self._matches(n, filters, dangling)]

    def _matches(self, network: NetworkRecord, filters: Filters, dangling: bool | None) -> bool:
        if dangling is not None and dangling != (
                not network.builtin and not self.in_use(network.id)):
            return False
        return (filters.match_name("name", network.name)
                and filters.match_any("id", network.id.startswith)
                and filters.match_labels(network.labels)
                and filters.match_any("driver", network.driver.__eq__)
                and filters.match_any("scope", "local".__eq__)
                and filters.match_any("type", lambda v: (v == "builtin") == network.builtin))

    @staticmethod
    def prune_limit(filters: Filters) -> int | None:
        """Check the prune filters; the `until` time they give."""
        return filters.checked(PRUNE_FILTERS).until_ns()

    async def prune(self, filters: Filters, until: int | None) -> list[str]:
        deleted = []
        for network in self.store.networks():
            if network.builtin or self.in_use(network.id) or (
                    network.config_only and any(n.config_from == network.id
                                                for n in self.store.networks())):
                continue
            if not filters.match_labels(network.labels):
                continue
            if until is not None and timestamp_ns(network.created) >= until:
                continue
            await self._delete(network)
            deleted.append(network.name)
        return deleted
