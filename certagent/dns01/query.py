"""DNS queries for dns-01 and dns-persist-01: to one server (authoritative, no
recursion), or through the configured resolver, else the system's; CNAMEs followed,
zones found from their SOA, a zone's authoritative servers.

Side effects: DNS queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from ..errors import ChallengeFailed
from ..model import Propagation

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 3.0
POLL = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Record:
    domain: str  # the identifier (a wildcard's base name)
    fqdn: str  # where the TXT goes, CNAMEs followed, with the trailing dot
    zone: str
    value: str
    token: str = ""


class Dns:
    """Queries: to one server, or through the resolver (the configured one, else the
    system's)."""

    def __init__(self, propagation: Propagation, fallback: tuple[str, int] | None) -> None:
        self.propagation = propagation
        self.via = propagation.resolver or fallback
        self.queries = 0

    def ask(
        self, name: str, rtype: str, server: tuple[str, int] | None = None
    ) -> dns.message.Message:
        target = server or self.via
        query = dns.message.make_query(name, rtype)
        self.queries += 1
        if target is None:  # the system's resolver
            try:
                answer = dns.resolver.resolve(name, rtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:  # no such name: an empty answer, as a server gives
                empty = dns.message.make_response(query)
                empty.set_rcode(dns.rcode.NXDOMAIN)
                return empty
            except dns.exception.DNSException as exc:
                raise ChallengeFailed(f"DNS lookup of {name} {rtype} failed: {exc}") from exc
            return answer.response
        if server is not None:
            query.flags &= ~dns.flags.RD  # an authoritative answer, not a cached one
        try:
            response, _ = dns.query.udp_with_fallback(
                query, target[0], port=target[1], timeout=QUERY_TIMEOUT
            )
        except (OSError, dns.exception.DNSException) as exc:
            raise ChallengeFailed(f"DNS server {target[0]}:{target[1]} did not answer "
                                  f"{name} {rtype}: {exc}") from exc  # fmt: skip
        return response

    def follow(self, fqdn: str) -> str:
        """`fqdn`, or where its CNAME chain ends (at most 8 hops)."""
        for _ in range(8):
            response = self.ask(fqdn, "CNAME")
            cname = [r for rr in response.answer if rr.rdtype == dns.rdatatype.CNAME for r in rr]
            if not cname:
                return fqdn
            fqdn = str(cname[0].target)
        raise ChallengeFailed(f"{fqdn}: more than 8 CNAMEs")

    def zone_of(self, fqdn: str) -> str:
        """The zone holding `fqdn`: the owner of the SOA that answers for it."""
        if self.via is None:  # the system's resolver hides the authority section: ask it so
            try:
                return str(dns.resolver.zone_for_name(fqdn))
            except dns.exception.DNSException as exc:
                raise ChallengeFailed(f"no zone (SOA) found for {fqdn}: {exc}") from exc
        name = dns.name.from_text(fqdn)
        while True:
            response = self.ask(name.to_text(), "SOA")
            for section in (response.answer, response.authority):
                for rrset in section:
                    if rrset.rdtype == dns.rdatatype.SOA:
                        return str(rrset.name)
            if name == dns.name.root:
                raise ChallengeFailed(f"no zone (SOA) found for {fqdn}")
            name = name.parent()

    def authoritative(self, zone: str) -> list[tuple[str, int]]:
        """The servers to wait for: configured, or the zone's NS records (port 53)."""
        if self.propagation.nameservers:
            return list(self.propagation.nameservers)
        response = self.ask(zone, "NS")
        names = [str(r.target) for rr in response.answer if rr.rdtype == dns.rdatatype.NS
                 for r in rr]  # fmt: skip
        out = []
        for ns in names:
            reply = self.ask(ns, "A")
            out += [(str(r.address), 53) for rr in reply.answer if rr.rdtype == dns.rdatatype.A
                    for r in rr]  # fmt: skip
        if not out:
            raise ChallengeFailed(f"no authoritative server found for {zone} (NS: {names})")
        return out

    def wait(self, records: Sequence[Record], deadline: float) -> None:
        """Until every authoritative server of every zone has every value."""
        by_zone: dict[str, list[Record]] = {}
        for r in records:
            by_zone.setdefault(r.zone, []).append(r)
        missing: list[tuple[tuple[str, int], Record]] = []
        for zone, recs in by_zone.items():
            missing += [(ns, r) for ns in self.authoritative(zone) for r in recs]
        i = 0
        while True:
            missing = [(ns, r) for ns, r in missing if not self._has(ns, r)]
            if not missing:
                return
            if time.monotonic() >= deadline:
                (host, port), r = missing[0]
                raise ChallengeFailed(
                    f"{host}:{port} does not serve TXT {r.value!r} at {r.fqdn} after "
                    f"{self.propagation.timeout:g} s (propagation timeout; "
                    f"{len(missing)} record(s) missing in all)"
                )
            time.sleep(POLL[min(i, len(POLL) - 1)])
            i += 1

    def _has(self, server: tuple[str, int], record: Record) -> bool:
        try:
            response = self.ask(record.fqdn, "TXT", server)
        except ChallengeFailed as exc:
            log.debug("%s", exc)
            return False
        values = {b"".join(r.strings).decode("ascii", "replace") for rr in response.answer
                  if rr.rdtype == dns.rdatatype.TXT for r in rr}  # fmt: skip
        return record.value in values
