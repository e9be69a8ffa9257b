"""Which queries the embedded DNS answers itself and how, as Docker's
resolver (libnetwork's resolver.go): the rest goes upstream."""

from __future__ import annotations

import asyncio

from dnslib import QTYPE, RCODE, DNSRecord

from services.network.dns import Resolver

KNOWN = {"web": [("172.20.0.2", "")]}


def _ask(name: str, qtype: str) -> DNSRecord:
    """The reply to one query; nothing upstream, so forwarding gives SERVFAIL."""
    resolver = Resolver(lambda asker, wanted: KNOWN.get(wanted),
                        lambda asker, address: "web.net" if address == "172.20.0.2" else None,
                        lambda asker: [])
    query = DNSRecord.question(name, qtype)
    return DNSRecord.parse(asyncio.run(resolver.answer(query.pack(), "asker")))


def test_addresses_of_a_known_name_not_authoritative() -> None:
    reply = _ask("web", "A")
    assert [str(rr.rdata) for rr in reply.rr] == ["172.20.0.2"]
    assert reply.header.rcode == RCODE.NOERROR
    assert (reply.header.aa, reply.header.ra) == (0, 1)


def test_known_name_without_ipv6_or_mail_gets_an_empty_answer() -> None:
    for qtype in ("AAAA", "MX"):
        reply = _ask("web", qtype)
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, []), qtype


def test_other_types_and_unknown_names_go_upstream() -> None:
    for name, qtype in (("web", "TXT"), ("web", "ANY"), ("other", "A"), ("other", "MX")):
        reply = _ask(name, qtype)
        assert reply.header.rcode == RCODE.SERVFAIL, (name, qtype)


def test_reverse_lookup_of_a_known_address() -> None:
    reply = _ask("2.0.20.172.in-addr.arpa", "PTR")
    assert reply.rr[0].rtype == QTYPE.PTR and str(reply.rr[0].rdata) == "web.net."
    assert _ask("9.0.20.172.in-addr.arpa", "PTR").header.rcode == RCODE.SERVFAIL
