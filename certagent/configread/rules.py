"""The rules across keys, each a small named validator run once every section has
been read: they see what was built (`Draft`) and the YAML tree, to name the key and
line of a problem. A new rule is one function added to RULES.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..configkinds import Checker, Value, human, ip_name
from ..model import (
    CASpec,
    CertSpec,
    Dns01Hook,
    Dns01Persist,
    Dns01Rfc2136,
    Keepalived,
    Monitor,
    Notify,
    Policy,
    Staging,
    TlsAlpn01Standalone,
)


@dataclass
class Draft:
    """Every section as read, complete or not (None: missing or not readable)."""

    state_dir: Path
    staging: Staging | None = None
    failover: Keepalived | None = None
    certs: tuple[CertSpec, ...] = ()
    monitor: Monitor = field(default_factory=Monitor)
    policy: Policy = field(default_factory=Policy)
    notify: Notify = field(default_factory=Notify)
    cas: tuple[CASpec, ...] = ()


def at(tree: Value, *keys: str) -> Value:
    """The value at `keys` in the tree, or the deepest one that exists on the way."""
    here = tree
    for key in keys:
        inner = here.value.get(key) if isinstance(here.value, dict) else None
        if not isinstance(inner, Value):
            break
        here = inner
    return here


Rule = Callable[[Checker, Value, Draft], None]


def _certs(tree: Value, draft: Draft) -> Iterator[tuple[CertSpec, Value]]:
    """Each certificate and its value (as `at(tree, "certificates", name)`)."""
    certs = at(tree, "certificates")
    table = certs.value if isinstance(certs.value, dict) else {}
    for cert in draft.certs:
        found = table.get(cert.name)
        yield cert, found if isinstance(found, Value) else certs


def one_certificate_per_name(ctx: Checker, tree: Value, draft: Draft) -> None:
    """A name is in one certificate only (two would be ordered and served apart)."""
    owner: dict[str, str] = {}
    for cert, v in _certs(tree, draft):
        for name in cert.names:
            if name in owner:
                ctx.error(f"{v.path}.names", f"{name} is also in certificate '{owner[name]}'",
                          at(v, "names").line)  # fmt: skip
            owner.setdefault(name, cert.name)


def names_fit_their_challenge(ctx: Checker, tree: Value, draft: Draft) -> None:
    """An IP address cannot be validated by dns-01; a wildcard only by dns-01."""
    for cert, v in _certs(tree, draft):
        names = at(v, "names")
        for name in cert.names:
            chosen = cert.challenge_for(name)
            dns01 = isinstance(chosen, Dns01Rfc2136 | Dns01Hook | Dns01Persist)
            if ip_name(name) and dns01:
                ctx.error(names, f"{name} is an IP address: dns-01 cannot validate it "
                          "(RFC 8738 section 7); use http-01 or tls-alpn-01")  # fmt: skip
            if name.startswith("*.") and not dns01:
                what = "tls-alpn-01" if isinstance(chosen, TlsAlpn01Standalone) else "http-01"
                ctx.error(names, f"wildcard {name} needs challenge type dns-01 (rfc2136 or "
                          f"hook); {what} cannot validate it")  # fmt: skip


def rehearsals_have_a_staging_ca(ctx: Checker, tree: Value, draft: Draft) -> None:
    """A staging target needs the top-level staging CA; with one, every deployed
    certificate is rehearsed or opts out with `staging: false`."""
    have_staging = isinstance(tree.value, dict) and "staging" in tree.value
    for cert, v in _certs(tree, draft):
        entry = v.value.get("staging") if isinstance(v.value, dict) else None
        opted_out = entry is not None and entry.value is False
        if cert.staging is not None and not have_staging:
            ctx.error(entry or v, "a staging target needs a top-level 'staging' CA")
        elif have_staging and cert.deploy is not None and cert.staging is None and not opted_out:
            ctx.error(v, "a staging CA is configured, so this certificate needs a 'staging' "
                      "target (or 'staging: false' to deploy it unrehearsed)")  # fmt: skip


def rehearsals_stay_apart_from_production(ctx: Checker, tree: Value, draft: Draft) -> None:
    """A staging target renders nowhere production reads and probes no production
    endpoint; staging keeps its own state directory."""
    if draft.staging is not None and draft.staging.state_dir == draft.state_dir:
        ctx.error(at(tree, "staging", "state_dir"), "must differ from the production state_dir")
    for cert, v in _certs(tree, draft):
        target, deploy = cert.staging, cert.deploy
        if target is None or deploy is None:
            continue
        for dest, _ in deploy.placements():
            if target.dir / dest.name == dest:
                ctx.error(at(v, "staging", "dir"), f"would render over the production file {dest}")
        for e in target.endpoints:
            if e in deploy.endpoints:
                ctx.error(at(v, "staging", "endpoints"), f"{e} is a production endpoint")


def failover_instances_exist(ctx: Checker, tree: Value, draft: Draft) -> None:
    """A certificate follows a keepalived instance the pair names; the peer is another node."""
    pair = draft.failover
    if pair is not None and pair.peer.address == pair.address:
        ctx.error(at(tree, "failover", "keepalived", "peer"),
                  f"the peer's address is this node's own ({pair.address})")  # fmt: skip
    known = {pair.instance, *pair.instances} if pair else set()
    for cert, v in _certs(tree, draft):
        if cert.failover_instance is not None and cert.failover_instance not in known:
            ctx.error(
                at(v, "failover_instance"),
                f"{cert.failover_instance!r} is not a configured keepalived instance "
                f"(failover.keepalived.instance or .instances: "
                f"{', '.join(sorted(known)) or 'none'})",
            )


def critical_below_warning(ctx: Checker, tree: Value, draft: Draft) -> None:
    """`check` turns CRITICAL after WARNING, in days and in shares of the lifetime."""
    m, v = draft.monitor, at(tree, "monitor")
    if m.critical_days > m.warning_days:
        ctx.error(v, f"critical_days ({m.critical_days:g}) is above warning_days "
                  f"({m.warning_days:g})")  # fmt: skip
    if m.critical_share > m.warning_share:
        ctx.error(v, f"critical_share ({m.critical_share:g}) is above warning_share "
                  f"({m.warning_share:g})")  # fmt: skip


def backoff_within_its_bound(ctx: Checker, tree: Value, draft: Draft) -> None:
    p = draft.policy
    if p.failure_backoff > p.max_backoff:
        ctx.error(
            at(tree, "policy", "failure_backoff"),
            f"failure_backoff ({human(p.failure_backoff)}) is above max_backoff "
            f"({human(p.max_backoff)})",
        )


def passwords_travel_encrypted(ctx: Checker, tree: Value, draft: Draft) -> None:
    """notify.email: a login needs both its keys, and STARTTLS before the password."""
    v = at(tree, "notify", "email")
    m = v.value if v.path == "notify.email" and isinstance(v.value, dict) else {}
    if "username" in m and "starttls" in m and m["starttls"].value is False:
        ctx.error(m["starttls"], "refusing to send a password without STARTTLS")
    if m and ("username" in m) != ("password_file" in m):
        ctx.error(v, "give both 'username' and 'password_file', or neither")


def one_account_per_ca(ctx: Checker, tree: Value, draft: Draft) -> None:
    """Each CA of the list once: two entries with one directory would share an account."""
    seen: set[str] = set()
    for i, ca in enumerate(draft.cas):
        if ca.directory in seen:
            ctx.error(at(tree, "ca"), f"ca[{i}]: {ca.directory} is listed twice")
        seen.add(ca.directory)


RULES: tuple[Rule, ...] = (
    one_account_per_ca,
    one_certificate_per_name,
    names_fit_their_challenge,
    rehearsals_have_a_staging_ca,
    rehearsals_stay_apart_from_production,
    failover_instances_exist,
    critical_below_warning,
    backoff_within_its_bound,
    passwords_travel_encrypted,
)
