"""dns-persist-01's standing record (draft-ietf-acme-dns-persist): its name, the value
to publish once, and whether a published value authorizes an order. Pure functions;
the DNS queries are dns01.PersistSolver's.

    _validation-persist.example.com. IN TXT
        "ca.example; accounturi=https://ca.example/acct/1; policy=wildcard; persistUntil=1767225600"
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

LABEL = "_validation-persist"
KIND = "dns-persist-01"


def record_name(name: str) -> str:
    """Where the record of a name (or a wildcard's base) lives."""
    return f"{LABEL}.{name.removeprefix('*.').rstrip('.')}."


def record_value(issuer: str, account_url: str, wildcard: bool, until: int | None) -> str:
    parts = [issuer.lower().rstrip("."), f"accounturi={account_url}"]
    if wildcard:
        parts.append("policy=wildcard")
    if until is not None:
        parts.append(f"persistUntil={until}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Parsed:
    issuer: str
    params: dict[str, str]


def parse(value: str) -> Parsed | None:
    """An issue-value (RFC 8659 section 4.2 syntax): `issuer; key=value; ...`; None
    when malformed (a missing issuer, a parameter without `=`, a key given twice)."""
    parts = [p.strip() for p in value.strip().strip('"').split(";")]
    issuer = parts[0].lower().rstrip(".")
    if not issuer or "=" in issuer:
        return None
    params: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep or not key or key in params:
            return None
        params[key] = val.strip()
    return Parsed(issuer, params)


def refusal(
    value: str, issuers: set[str], account_url: str, wildcard: bool, now: dt.datetime
) -> str | None:
    """Why this published value does not authorize the order, or None when it does."""
    parsed = parse(value)
    if parsed is None:
        return "malformed"
    if parsed.issuer not in issuers:
        return f"names the issuer {parsed.issuer}, not one of {', '.join(sorted(issuers))}"
    if parsed.params.get("accounturi") != account_url:
        return f"names the account {parsed.params.get('accounturi')!r}, not ours ({account_url})"
    until = parsed.params.get("persistuntil")
    if until is not None:
        if not until.isdigit():
            return f"persistUntil {until!r} is not a Unix time"
        if int(until) < now.timestamp():
            return f"persistUntil {until} has passed"
    if wildcard and parsed.params.get("policy", "").lower() != "wildcard":
        return "a wildcard needs policy=wildcard"
    return None
