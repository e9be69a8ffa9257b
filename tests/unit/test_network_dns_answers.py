"""Which queries the embedded DNS answers itself and how, as Docker's
resolver (libnetwork's resolver.go): the rest goes upstream."""

from __future__ import annotations

import asyncio

from dnslib import QTYPE, RCODE, DNSRecord

from services.network.dns import Resolver

KNOWN = {"web": [("172.20.0.2", "")]}


def _ask(name: str, qtype: str, ndots_set: bool = False) -> DNSRecord:
    """The reply to one query; nothing upstream, so forwarding gives SERVFAIL."""
    resolver = Resolver(lambda asker, wanted: KNOWN.get(wanted),
                        lambda asker, address: "web.net" if address == "172.20.0.2" else None,
                        lambda asker: [], lambda asker: ndots_set)
    query = DNSRecord.question(name, qtype)
    return DNSRecord.parse(asyncio.run(resolver.answer(query.pack(), "asker", "")))


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


def test_with_ndots_set_unknown_single_labels_are_answered_empty_not_forwarded() -> None:
    """As libnetwork's resolver when the container's options set ndots."""
    for name, qtype in (("other", "A"), ("other", "AAAA"), ("other.", "A")):
        reply = _ask(name, qtype, ndots_set=True)
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, []), (name, qtype)
        assert (reply.header.aa, reply.header.ra) == (0, 1)
    for name, qtype in (("other.test", "A"), ("other", "MX"), ("other", "TXT")):
        assert _ask(name, qtype, ndots_set=True).header.rcode == RCODE.SERVFAIL, (name, qtype)
    assert [str(rr.rdata) for rr in _ask("web", "A", ndots_set=True).rr] == ["172.20.0.2"]
