"""The embedded DNS resolver of user-defined networks.

One UDP and one TCP listener per user network, on the network's gateway
address, port 53 (the containers' resolv.conf names it). It answers the names of
containers sharing a network with the asker (container names, aliases,
short IDs) and forwards everything else to the asker's upstream servers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSRecord
from prometheus_client import Counter

log = logging.getLogger("berth.network.dns")

DNS_QUERIES = Counter("berth_network_dns_queries_total",
                      "DNS queries of containers by outcome (answered, forwarded, failed).",
                      ["outcome"])
TTL = 600
UPSTREAM_TIMEOUT = 2.0

# (asker's IP, lower-case name) -> (IPv4, IPv6 or "") pairs, or None when not a container
Lookup = Callable[[str, str], list[tuple[str, str]] | None]
# (asker's IP, address) -> the container's "name.network", or None
ReverseLookup = Callable[[str, str], str | None]
ARPA = ".in-addr.arpa"
# asker's IP -> upstream servers
Upstreams = Callable[[str], list[str]]


def _exchange_udp(query: bytes, server: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(UPSTREAM_TIMEOUT)
        sock.sendto(query, (server, 53))
        return sock.recv(65535)


def _exchange_tcp(query: bytes, server: str) -> bytes:
    with socket.create_connection((server, 53), timeout=UPSTREAM_TIMEOUT) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        stream = sock.makefile("rb")
        (length,) = struct.unpack("!H", stream.read(2))
        return stream.read(length)


def _forward(query: bytes, servers: list[str], tcp: bool) -> bytes | None:
    """The first upstream answer; over TCP for TCP clients, as they asked."""
    exchange = _exchange_tcp if tcp else _exchange_udp
    for server in servers:
        try:
            return exchange(query, server)
        except (OSError, struct.error):
            continue
    return None


class Resolver:
    def __init__(self, lookup: Lookup, reverse: ReverseLookup, upstreams: Upstreams) -> None:
        self._lookup = lookup
        self._reverse = reverse
        self._upstreams = upstreams

    def _local_answer(self, query: DNSRecord, asker: str) -> DNSRecord | None:
        """The reply for a container name or address, None for anything else."""
        question = query.q
        name = str(question.qname).rstrip(".").lower()
        if question.qtype == QTYPE.PTR and name.endswith(ARPA):
            address = ".".join(reversed(name.removesuffix(ARPA).split(".")))
            target = self._reverse(asker, address)
            if target is None:
                return None
            reply = query.reply()
            reply.add_answer(RR(question.qname, QTYPE.PTR, rdata=PTR(target), ttl=TTL))
            return reply
        addresses = self._lookup(asker, name)
        if addresses is None:
            return None
        reply = query.reply()
        for address, address6 in addresses:
            if question.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=TTL))
            if address6 and question.qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.AAAA, rdata=AAAA(address6), ttl=TTL))
        return reply

    async def answer(self, data: bytes, asker: str, tcp: bool = False) -> bytes | None:
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return None
        if not query.questions:
            return None
        local = self._local_answer(query, asker)
        if local is not None:
            DNS_QUERIES.labels("answered").inc()
            return local.pack()
        forwarded = await asyncio.to_thread(_forward, data, self._upstreams(asker), tcp)
        if forwarded is None:
            DNS_QUERIES.labels("failed").inc()
            reply = query.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        DNS_QUERIES.labels("forwarded").inc()
        return forwarded


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.ensure_future(self._reply(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self._resolver.answer(data, addr[0])
        except Exception:
            log.exception("DNS query from %s failed", addr[0])
            return
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


class DnsListeners:
    """The UDP and TCP listeners of every user network, by network ID."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._listeners: dict[str, tuple[asyncio.DatagramTransport, asyncio.Server]] = {}

    async def start(self, network_id: str, address: str) -> None:
        """Listen on address:53; a host DNS server holding *:53 leaves the
        network without names rather than failing it (see `serving`)."""
        if network_id in self._listeners:
            return
        loop = asyncio.get_running_loop()
        try:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self._resolver), local_addr=(address, 53))
        except OSError as exc:
            log.warning("no DNS for network %s: cannot listen on %s:53: %s",
                        network_id[:12], address, exc)
            return
        try:
            tcp = await asyncio.start_server(self._serve_tcp, address, 53)
        except OSError as exc:
            udp.close()
            log.warning("no DNS for network %s: cannot listen on %s:53/tcp: %s",
                        network_id[:12], address, exc)
            return
        self._listeners[network_id] = (udp, tcp)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """RFC 7766 framing: each message behind its 2-byte length."""
        asker = writer.get_extra_info("peername")[0]
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await self._resolver.answer(await reader.readexactly(length), asker,
                                                    tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def serving(self, network_id: str) -> bool:
        return network_id in self._listeners

    def stop(self, network_id: str) -> None:
        listeners = self._listeners.pop(network_id, None)
        if listeners is not None:
            udp, tcp = listeners
            udp.close()
            tcp.close()

    def stop_all(self) -> None:
        for network_id in list(self._listeners):
            self.stop(network_id)
