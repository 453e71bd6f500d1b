"""dns-01 (RFC 8555 section 8.4): the TXT records of an order, published together
through RFC 2136 dynamic updates signed with TSIG (or the operator's hook), waited for
on every authoritative server of the zone, and always removed again.

    present(name, value) for each name   -> collected
    ready()   one signed UPDATE per zone (all names at once), then every
              authoritative server asked until each has every value: one wait
    cleanup(name) for each name          -> collected
    finish()  one UPDATE per zone deleting exactly those values

`_acme-challenge.NAME` that is a CNAME is followed (the acme-dns pattern): the record
goes into the target's zone. Every record added is written to a journal in the state
directory first, so a run killed in between leaves nothing behind for long: the next
run removes what the journal lists.

The only module that imports dnspython. Side effects: DNS queries and updates; the
journal file; the hook's process.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update

from ..errors import ChallengeFailed
from ..model import Command, Dns01Hook, Dns01Rfc2136, Propagation
from .journal import JOURNAL, Journal
from .persist import PersistSolver
from .query import QUERY_TIMEOUT, Dns, Record

log = logging.getLogger(__name__)

__all__ = [
    "JOURNAL",
    "HookSolver",
    "Journal",
    "PersistSolver",
    "Record",
    "Rfc2136Solver",
    "challenge_name",
    "load_tsig",
]  # fmt: skip

_ALGORITHMS = {
    "hmac-md5": dns.tsig.HMAC_MD5, "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224, "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384, "hmac-sha512": dns.tsig.HMAC_SHA512,
}  # fmt: skip
_KEY = re.compile(r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}\s*;', re.S)
Runner = Callable[[Sequence[str], float, Mapping[str, str]], Any]  # system.run


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret
        return f"TsigKey({self.name!r}, {self.algorithm!r})"


def load_tsig(path: Path) -> TsigKey:
    """A TSIG key in BIND's format (`tsig-keygen`, `ddns-confgen`); the error names the
    file, never the secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChallengeFailed(f"cannot read the TSIG key file {path}: {exc}") from None
    match = _KEY.search(text)
    if match is None:
        raise ChallengeFailed(f'{path}: no `key "NAME" {{ algorithm ...; secret ...; }};`')
    body = match.group("body")
    algo = re.search(r"algorithm\s+\"?([\w-]+)\"?\s*;", body)
    secret = re.search(r'secret\s+"([^"]+)"\s*;', body)
    if algo is None or secret is None:
        raise ChallengeFailed(f"{path}: the key needs an `algorithm` and a `secret`")
    name = algo.group(1).lower()
    if name not in _ALGORITHMS:
        raise ChallengeFailed(
            f"{path}: unknown TSIG algorithm {name!r} (allowed: {', '.join(_ALGORITHMS)})"
        )
    try:
        raw = base64.b64decode(secret.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise ChallengeFailed(f"{path}: the secret is not base64") from None
    return TsigKey(match.group("name").rstrip("."), name, raw)


def challenge_name(domain: str) -> str:
    return f"_acme-challenge.{domain.removeprefix('*.').rstrip('.')}."


class _Dns01:
    """What both ways of publishing share: collecting per order (each order runs in
    its own thread), waiting, the journal."""

    kind = "dns-01"

    def __init__(self, propagation: Propagation, journal: Journal, source: str,
                 fallback: tuple[str, int] | None) -> None:  # fmt: skip
        self.dns = Dns(propagation, fallback)
        self.journal = journal
        self.source = source  # which solver wrote a journal entry
        self._order = threading.local()  # this order's records: new, and cleaned up
        self._lock = threading.Lock()
        self._live: list[Record] = []  # published and not yet removed, all orders

    def _mine(self) -> tuple[list[Record], list[Record]]:
        if not hasattr(self._order, "new"):
            self._order.new, self._order.done = [], []
        return self._order.new, self._order.done

    def present(self, domain: str, token: str, value: str) -> None:
        fqdn = self.dns.follow(challenge_name(domain))
        self._mine()[0].append(Record(domain, fqdn, self._zone(fqdn), value, token))

    def _zone(self, fqdn: str) -> str:
        return self.dns.zone_of(fqdn)

    def ready(self) -> None:
        """Publish this order's records at once, then wait for all of them."""
        new, _ = self._mine()
        records = list(new)
        new.clear()
        if not records:
            return
        self.journal.add(self.source, records)  # first: a kill from here is swept later
        with self._lock:
            self._live += records
        self.publish(records)
        start = time.monotonic()
        self.dns.wait(records, start + self.dns.propagation.timeout)
        log.info(
            "dns-01: %d record(s) on every authoritative server in %.2f s "
            "(DNS queries so far in this run: %d; updates: %d)",
            len(records),
            time.monotonic() - start,
            self.dns.queries,
            getattr(self, "updates", 0),
        )

    def cleanup(self, domain: str, token: str) -> None:
        _, done = self._mine()
        with self._lock:
            done += [r for r in self._live if r.token == token and r not in done]

    def finish(self) -> None:
        """Remove this order's records (one update per zone)."""
        _, done = self._mine()
        records = list(done)
        done.clear()
        self._remove(records)

    def _remove(self, records: list[Record]) -> None:
        if not records:
            return
        self.remove(records)
        with self._lock:
            self._live = [r for r in self._live if r not in records]
        self.journal.drop(self.source, records)

    def sweep(self) -> list[str]:
        """Remove what an earlier run added and never removed (it was killed)."""
        mine = [e for e in self.journal.read() if e.get("source") == self.source]
        records = [
            Record(str(e.get("domain", "")), e["fqdn"], e["zone"], e["value"])
            for e in mine
            if all(isinstance(e.get(k), str) for k in ("fqdn", "zone", "value"))
        ]
        if not records:
            return []
        try:
            self.remove(records)
        except ChallengeFailed as exc:
            log.warning("dns-01: records left by an earlier run stay for now: %s", exc)
            return []
        self.journal.drop(self.source, None)
        return [f"{r.fqdn} TXT {r.value}" for r in records]

    def publish(self, records: list[Record]) -> None:
        raise NotImplementedError

    def remove(self, records: list[Record]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """At the end of the run: whatever is still published goes."""
        with self._lock:
            left = list(self._live)
        try:
            self._remove(left)
        except ChallengeFailed as exc:
            log.warning("dns-01: %s; the next run removes them", exc)


class Rfc2136Solver(_Dns01):
    """TXT records through signed dynamic updates to one primary server."""

    def __init__(self, spec: Dns01Rfc2136, journal: Journal) -> None:
        server = (spec.server, spec.port)
        super().__init__(spec.propagation, journal, f"rfc2136:{spec.server}:{spec.port}",
                         spec.propagation.resolver or server)  # fmt: skip
        self.spec = spec
        self.server = server
        self.key = load_tsig(spec.tsig_key_file)
        self.updates = 0
        swept = self.sweep()
        if swept:
            log.warning("dns-01: removed %d record(s) an earlier run left: %s",
                        len(swept), ", ".join(swept))  # fmt: skip

    def _zone(self, fqdn: str) -> str:
        if self.spec.zone is not None:
            zone = self.spec.zone.rstrip(".") + "."
            if fqdn == zone or fqdn.endswith("." + zone):
                return zone
        return self.dns.zone_of(fqdn)

    def publish(self, records: list[Record]) -> None:
        self._update(records, add=True)

    def remove(self, records: list[Record]) -> None:
        self._update(records, add=False)

    def _update(self, records: list[Record], add: bool) -> None:
        by_zone: dict[str, list[Record]] = {}
        for r in records:
            by_zone.setdefault(r.zone, []).append(r)
        keyring = dns.tsigkeyring.from_text(
            {self.key.name: base64.b64encode(self.key.secret).decode()}
        )
        for zone, recs in by_zone.items():
            update = dns.update.UpdateMessage(
                zone,
                keyring=keyring,
                keyname=dns.name.from_text(self.key.name),
                keyalgorithm=_ALGORITHMS[self.key.algorithm],
            )
            for r in recs:
                if add:
                    update.add(r.fqdn, self.spec.propagation.ttl, "TXT", f'"{r.value}"')
                else:
                    update.delete(r.fqdn, "TXT", f'"{r.value}"')
            self.updates += 1
            try:
                response = dns.query.tcp(update, self.server[0], port=self.server[1],
                                         timeout=QUERY_TIMEOUT * 2)  # fmt: skip
            except dns.tsig.PeerError as exc:
                raise ChallengeFailed(
                    f"{self.server[0]}:{self.server[1]} refused the update of {zone} signed "
                    f"with TSIG key {self.key.name!r} from {self.spec.tsig_key_file} "
                    f"({type(exc).__name__}: wrong key or algorithm?)"
                ) from None
            except (OSError, dns.exception.DNSException) as exc:
                raise ChallengeFailed(f"update of {zone} at {self.server[0]}:{self.server[1]} "
                                      f"failed: {exc}") from exc  # fmt: skip
            rcode = response.rcode()
            if rcode != dns.rcode.NOERROR:
                why = dns.rcode.to_text(rcode)
                hint = f" (TSIG key {self.key.name!r} not allowed to update it?)" if rcode in (
                    dns.rcode.REFUSED, dns.rcode.NOTAUTH) else ""  # fmt: skip
                raise ChallengeFailed(f"{self.server[0]}:{self.server[1]} answered {why} to "
                                      f"the update of {zone}{hint}")  # fmt: skip


class HookSolver(_Dns01):
    """TXT records through the operator's program, run as
    `ARGV present|cleanup FQDN VALUE` (no shell; CERTAGENT_DNS_* in its environment)."""

    def __init__(self, spec: Dns01Hook, journal: Journal, run: Runner) -> None:
        source = "hook:" + " ".join(spec.command.argv)
        super().__init__(spec.propagation, journal, source, spec.propagation.resolver)
        self.command: Command = spec.command
        self.run = run
        self.sweep()

    def publish(self, records: list[Record]) -> None:
        for r in records:
            self._call("present", r)

    def remove(self, records: list[Record]) -> None:
        for r in records:
            self._call("cleanup", r)

    def _call(self, action: str, r: Record) -> None:
        env = {**dict(self.command.env), "CERTAGENT_DNS_ACTION": action,
               "CERTAGENT_DNS_FQDN": r.fqdn, "CERTAGENT_DNS_VALUE": r.value,
               "CERTAGENT_DNS_DOMAIN": r.domain, "CERTAGENT_DNS_ZONE": r.zone}  # fmt: skip
        result = self.run([*self.command.argv, action, r.fqdn, r.value], self.command.timeout, env)
        if not result.ok:
            raise ChallengeFailed(f"dns-01 hook {action} {r.fqdn}: {result.describe()}")
