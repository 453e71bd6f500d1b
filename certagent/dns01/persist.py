"""dns-persist-01's solver: nothing published per order; the standing record checked
on the authoritative servers before the CA is asked (draft-ietf-acme-dns-persist).

Side effects: DNS queries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import dns.rdatatype

from .. import persist
from ..errors import ChallengeFailed
from ..model import Dns01Persist
from .query import Dns


class PersistSolver:
    """dns-persist-01: nothing is published or removed per order; before the CA is
    asked, every authoritative server of the name's zone must serve a standing record
    that authorizes it (our account, an issuer the CA accepts), so a missing or wrong
    record is an error saying the record to publish, not a failed validation."""

    kind = persist.KIND

    def __init__(self, spec: Dns01Persist) -> None:
        self.spec = spec
        self.dns = Dns(spec.propagation, None)

    def present(self, domain: str, token: str, value: str) -> None:
        """Nothing to publish: the record stands."""

    def ready(self) -> None:
        """Nothing was published."""

    def cleanup(self, domain: str, token: str) -> None:
        """Nothing to remove."""

    def finish(self) -> None:
        """Nothing to remove."""

    def check(self, name: str, offered: Sequence[str], account_url: str) -> None:
        """Raise ChallengeFailed unless every authoritative server serves a record for
        `name` that authorizes this order (`offered`: the CA's issuer domain names)."""
        issuers = {i.lower().rstrip(".") for i in offered}
        if self.spec.issuer is not None:
            issuers &= {self.spec.issuer.lower().rstrip(".")}
        wildcard = name.startswith("*.")
        want = persist.record_value(
            self.spec.issuer or (sorted(offered) or ["ISSUER"])[0], account_url, wildcard,
            self.spec.persist_until)  # fmt: skip
        fqdn = persist.record_name(name)
        publish = f"publish {fqdn} TXT \"{want}\" (`certagent account show` prints it)"
        if not issuers:
            raise ChallengeFailed(
                f"{name}: the CA's dns-persist-01 challenge names the issuers "
                f"{', '.join(offered) or 'none'}, not challenge.issuer {self.spec.issuer}"
            )
        now = dt.datetime.now(dt.UTC)
        if self.spec.persist_until is not None and self.spec.persist_until < now.timestamp():
            raise ChallengeFailed(f"{name}: challenge.persist_until has passed: {publish}")
        servers = list(self.spec.propagation.nameservers) or self.dns.authoritative(
            self.dns.zone_of(fqdn))  # fmt: skip
        for server in servers:
            response = self.dns.ask(fqdn, "TXT", server)
            values = [b"".join(r.strings).decode("utf-8", "replace") for rr in response.answer
                      if rr.rdtype == dns.rdatatype.TXT for r in rr]  # fmt: skip
            why = [persist.refusal(v, issuers, account_url, wildcard, now) for v in values]
            if None in why:
                continue
            seen = "; ".join(f"{v!r}: {w}" for v, w in zip(values, why, strict=True))
            raise ChallengeFailed(
                f"{name}: {server[0]}:{server[1]} serves no dns-persist-01 record that "
                f"authorizes this account ({seen or 'no TXT record at all'}): {publish}"
            )
