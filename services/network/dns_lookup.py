"""What the embedded DNS answers, read from the store (the asker is the
container whose resolver got the query): the names a container can resolve
(containers sharing a user network with it), reverse lookups, and the
servers its other queries go to. dns.py owns the wire side."""

from __future__ import annotations

from services.network import files
from services.network.store import EndpointRecord, NetworkRecord, NetworkStore
from services.network.wiring import KernelWiring


class DnsLookup:
    def __init__(self, store: NetworkStore, wiring: KernelWiring) -> None:
        self.store = store
        self.wiring = wiring

    def _visible_endpoints(self, asker: str) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """Wired endpoints on the user networks the asking container is on."""
        networks = {n.id: n for n in self.store.networks() if n.is_user_defined}
        shared = {e.network_id for e in self.store.endpoints(container_id=asker)
                  if e.wired} & networks.keys()
        return [(networks[network_id], endpoint) for network_id in shared
                for endpoint in self.store.endpoints(network_id=network_id) if endpoint.wired]

    def lookup(self, asker: str, name: str) -> list[tuple[str, str]] | None:
        found = []
        for _, endpoint in self._visible_endpoints(asker):
            names = {endpoint.container_name.lower(), *map(str.lower, endpoint.aliases),
                     endpoint.container_id[:12]}
            if name in names:
                found.append((endpoint.ip, endpoint.ip6))
        return found or None

    def reverse(self, asker: str, address: str) -> str | None:
        for network, endpoint in self._visible_endpoints(asker):
            if endpoint.ip == address:
                return f"{endpoint.container_name}.{network.name}"
        return None

    def upstreams(self, asker: str) -> list[str]:
        """Where to forward: none for a container only on internal networks (as
        Docker: they have no way out), else its --dns servers or the host's."""
        views = [v for v in self.wiring.views(asker) if v.record.wired]
        if views and all(v.network.internal for v in views):
            return []
        sandbox = self.store.sandbox(asker)
        if sandbox is not None and sandbox.dns:
            return sandbox.dns
        return files.read_host_resolv_conf().nameservers or files.FALLBACK_NAMESERVERS
