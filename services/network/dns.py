"""The embedded DNS resolver of containers on user-defined networks.

As Docker's: one UDP and one TCP listener per container, inside its network
namespace, reached at 127.0.0.11:53 (the container's resolv.conf names it).
It answers the names of containers sharing a network with the asker
(container names, aliases, short IDs) and forwards everything else to the
asker's upstream servers from inside the asker's namespace, as Docker's, so a
server only the container's networks reach (another container) works.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSRecord
from prometheus_client import Counter

from services.common import netns
from services.common.errors import Internal
from services.common.tasks import keep_task
from services.network import kernel

log = logging.getLogger("berth.network.dns")

DNS_QUERIES = Counter("berth_network_dns_queries_total",
                      "DNS queries of containers by outcome (answered, forwarded, failed).",
                      ["outcome"])
TTL = 600
UPSTREAM_TIMEOUT = 2.0

RESOLVER_ADDRESS = "127.0.0.11"
NAT_TABLE = "berth_dns"

# (asking container's ID, lower-case name) -> (IPv4, IPv6 or "") pairs, or None
Lookup = Callable[[str, str], list[tuple[str, str]] | None]
# (asking container's ID, address) -> the container's "name.network", or None
ReverseLookup = Callable[[str, str], str | None]
ARPA = ".in-addr.arpa"
# asking container's ID -> upstream servers
Upstreams = Callable[[str], list[str]]
# asking container's ID -> whether its resolv.conf options set ndots
NdotsSet = Callable[[str], bool]


def _upstream_socket(server: str, netns_path: str, kind: socket.SocketKind) -> socket.socket:
    """A socket to reach `server` from the asker's netns; a loopback server
    (e.g. the host's 127.0.0.53) from the host's, as Docker's `HostLoopback`."""
    address = ipaddress.ip_address(server)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = netns.socket_in("" if address.is_loopback else netns_path, family, kind)
    sock.settimeout(UPSTREAM_TIMEOUT)
    return sock


def _exchange_udp(query: bytes, server: str, netns_path: str) -> bytes:
    with _upstream_socket(server, netns_path, socket.SOCK_DGRAM) as sock:
        sock.connect((server, 53))
        sock.send(query)
        return sock.recv(65535)


def _exchange_tcp(query: bytes, server: str, netns_path: str) -> bytes:
    with _upstream_socket(server, netns_path, socket.SOCK_STREAM) as sock:
        sock.connect((server, 53))
        sock.sendall(struct.pack("!H", len(query)) + query)
        stream = sock.makefile("rb")
        (length,) = struct.unpack("!H", stream.read(2))
        return stream.read(length)


def _forward(query: bytes, servers: list[str], netns_path: str, tcp: bool) -> bytes | None:
    """The first upstream answer; over TCP for TCP clients, as they asked.
    A socket per query, as Docker's: making one in the netns costs a short
    thread, far below an upstream round trip."""
    exchange = _exchange_tcp if tcp else _exchange_udp
    for server in servers:
        try:
            return exchange(query, server, netns_path)
        except (OSError, ValueError, struct.error):
            continue
    return None


class Resolver:
    def __init__(self, lookup: Lookup, reverse: ReverseLookup, upstreams: Upstreams,
                 ndots_set: NdotsSet) -> None:
        self._lookup = lookup
        self._reverse = reverse
        self._upstreams = upstreams
        self._ndots_set = ndots_set

    def _local_answer(self, query: DNSRecord, asker: str) -> DNSRecord | None:
        """The reply for a container name or address, None for what goes
        upstream. As Docker's resolver: A and AAAA get the addresses (none of
        a family the container lacks), MX of a known name an empty answer
        (an implicit MX), PTR the `name.network`; other types are forwarded.
        Replies are not authoritative and offer recursion, as Docker's."""
        question = query.q
        name = str(question.qname).rstrip(".").lower()
        if question.qtype == QTYPE.PTR:
            return self._ptr_answer(query, asker, name)
        if question.qtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.MX):
            return None
        addresses = self._lookup(asker, name)
        if addresses is None:
            return None
        reply = query.reply(ra=1, aa=0)
        for address, address6 in addresses:
            if question.qtype == QTYPE.A:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(address), ttl=TTL))
            if address6 and question.qtype == QTYPE.AAAA:
                reply.add_answer(RR(question.qname, QTYPE.AAAA, rdata=AAAA(address6), ttl=TTL))
        return reply

    def _ptr_answer(self, query: DNSRecord, asker: str, name: str) -> DNSRecord | None:
        if not name.endswith(ARPA):
            return None
        target = self._reverse(asker, ".".join(reversed(name.removesuffix(ARPA).split("."))))
        if target is None:
            return None
        reply = query.reply(ra=1, aa=0)
        reply.add_answer(RR(query.q.qname, QTYPE.PTR, rdata=PTR(target), ttl=TTL))
        return reply

    def _kept_single_label(self, query: DNSRecord, asker: str) -> DNSRecord | None:
        """As Docker's resolver when the container set ndots itself: an A or
        AAAA query of an unknown name without a dot is not forwarded but
        answered empty, so the client goes on with its search domains."""
        name = str(query.q.qname).rstrip(".")
        if (query.q.qtype not in (QTYPE.A, QTYPE.AAAA) or "." in name
                or not self._ndots_set(asker)):
            return None
        return query.reply(ra=1, aa=0)

    async def answer(self, data: bytes, asker: str, netns_path: str,
                     tcp: bool = False) -> bytes | None:
        """The reply to `data` from the container `asker`, whose netns
        `netns_path` forwarded queries leave from."""
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return None
        if not query.questions:
            return None
        local = self._local_answer(query, asker) or self._kept_single_label(query, asker)
        if local is not None:
            DNS_QUERIES.labels("answered").inc()
            return local.pack()
        forwarded = await asyncio.to_thread(_forward, data, self._upstreams(asker),
                                            netns_path, tcp)
        if forwarded is None:
            DNS_QUERIES.labels("failed").inc()
            reply = query.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        DNS_QUERIES.labels("forwarded").inc()
        return forwarded


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver, container_id: str, netns_path: str) -> None:
        self._resolver = resolver
        self._container_id = container_id
        self._netns_path = netns_path
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        keep_task(self._tasks, asyncio.ensure_future(self._reply(data, addr)))

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self._resolver.answer(data, self._container_id, self._netns_path)
        except Exception:
            log.exception("DNS query of container %s failed", self._container_id[:12])
            return
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


class DnsListeners:
    """Each sandbox's resolver: UDP and TCP listeners inside its netns, by container ID."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._listeners: dict[str, tuple[asyncio.DatagramTransport, asyncio.Server]] = {}

    async def start(self, container_id: str, netns_path: str) -> None:
        """Answer on 127.0.0.11:53 in the netns: listen on random ports there
        and redirect port 53 to them (as Docker, so a DNS server of the
        container's own can still take port 53)."""
        if container_id in self._listeners:
            return
        udp_sock, tcp_sock = await asyncio.to_thread(kernel.resolver_sockets, netns_path,
                                                     RESOLVER_ADDRESS)
        loop = asyncio.get_running_loop()
        try:
            await nat_to_resolver(netns_path, RESOLVER_ADDRESS, udp_sock.getsockname()[1],
                                  tcp_sock.getsockname()[1])
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self._resolver, container_id, netns_path), sock=udp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise
        tcp = await asyncio.start_server(
            functools.partial(self._serve_tcp, container_id, netns_path), sock=tcp_sock)
        self._listeners[container_id] = (udp, tcp)

    async def _serve_tcp(self, container_id: str, netns_path: str,
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """RFC 7766 framing: each message behind its 2-byte length."""
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await self._resolver.answer(await reader.readexactly(length),
                                                    container_id, netns_path, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self, container_id: str) -> None:
        listeners = self._listeners.pop(container_id, None)
        if listeners is not None:
            udp, tcp = listeners
            udp.close()
            tcp.close()

    def stop_all(self) -> None:
        for container_id in list(self._listeners):
            self.stop(container_id)


async def nat_to_resolver(netns_path: str, address: str, udp_port: int, tcp_port: int) -> None:
    """nftables in the netns: queries to address:53 reach the resolver's ports."""
    script = "\n".join([
        f"table ip {NAT_TABLE} {{}}", f"delete table ip {NAT_TABLE}",
        f"table ip {NAT_TABLE} {{",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        f"    ip daddr {address} udp dport 53 dnat to {address}:{udp_port}",
        f"    ip daddr {address} tcp dport 53 dnat to {address}:{tcp_port}",
        "  }",
        "}", ""])
    process = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={netns_path}", "nft", "-f", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate(script.encode())
    if process.returncode != 0:
        raise Internal(f"cannot redirect DNS to the embedded resolver in {netns_path}: "
                       f"{stderr.decode(errors='replace').strip()}")
