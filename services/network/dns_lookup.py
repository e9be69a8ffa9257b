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

    def _shared_networks(self, asker: str) -> list[tuple[NetworkRecord, list[EndpointRecord]]]:
        """The user networks the asking container is wired on, in Docker's order
        of its endpoints, each with the wired endpoints on it."""
        ranked = sorted((v for v in self.wiring.views(asker)
                         if v.record.wired and v.network.is_user_defined),
                        key=lambda v: v.docker_rank)
        return [(view.network, [e for e in self.store.endpoints(network_id=view.network.id)
                                if e.wired]) for view in ranked]

    def lookup(self, asker: str, name: str) -> list[tuple[str, str]] | None:
        """The addresses of `name` on the first shared network that knows it, as
        Docker's embedded DNS answers (not one address per shared network);
        `name.network` asks that network only."""
        shared = self._shared_networks(asker)
        for wanted, network_name in _readings(name):
            for network, endpoints in shared:
                if network_name and network.name.lower() != network_name:
                    continue
                found = [(e.ip, e.ip6) for e in endpoints
                         if wanted in {e.container_name.lower(), *map(str.lower, e.aliases),
                                       e.container_id[:12]}]
                if found:
                    return found
        return None

    def reverse(self, asker: str, address: str) -> str | None:
        for network, endpoints in self._shared_networks(asker):
            owner = next((e for e in endpoints if e.ip == address), None)
            if owner is not None:
                return f"{owner.container_name}.{network.name}"
        return None

    def ndots_set(self, asker: str) -> bool:
        sandbox = self.store.sandbox(asker)
        return sandbox is not None and sandbox.ndots_set

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


def _readings(name: str) -> list[tuple[str, str]]:
    """Docker's readings of a dotted name, in its order: `a.b.c` on any
    network, then `a.b` on network `c`, then `a` on network `b.c`."""
    parts = name.split(".")
    return [(name, "")] + [(".".join(parts[:cut]), ".".join(parts[cut:]))
                           for cut in range(len(parts) - 1, 0, -1)]
