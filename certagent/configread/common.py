"""Readers shared by several sections, and the CA's: trust roots, endpoints, a CA
with its external account binding, the staging CA, the policy.

Side effects: none (files named are only looked for).
"""

from __future__ import annotations

from pathlib import Path

from .. import configspec as spec
from ..configkinds import Checker, Section, Value
from ..model import CASpec, Eab, Endpoint, Policy, Staging, Unreachable


def roots(ctx: Checker, s: Section, m: dict[str, Value], v: Value) -> tuple[Path, ...]:
    found: list[Path] = s.get(ctx, m, "trust_roots", [])
    for i, root in enumerate(found):
        if not root.is_file():
            ctx.error(f"{v.path}.trust_roots[{i}]", f"no such file: {root}", m["trust_roots"].line)
    return tuple(found)


def endpoints(
    ctx: Checker, s: Section, m: dict[str, Value], default_sni: str
) -> tuple[Endpoint, ...]:
    items = s.get(ctx, m, "endpoints", [])
    if items == "none":  # deploy handles `none` itself; a staging target cannot say it
        return ()
    return tuple(Endpoint(host, port, sni or default_sni, tls) for host, port, sni, tls in items)


def ca(ctx: Checker, v: Value) -> CASpec | None:
    s = spec.CA
    m = s.read(ctx, v)
    directory = s.get(ctx, m, "directory")
    contact = s.get(ctx, m, "contact")
    trust = roots(ctx, s, m, v)
    binding = eab(ctx, m["eab"]) if "eab" in m else None
    if directory is None:
        return None
    return s.build(ctx, m, CASpec, directory=directory, contact=tuple(contact),
                   trust_roots=trust, eab=binding)  # fmt: skip


def eab(ctx: Checker, v: Value) -> Eab | None:
    s = spec.EAB
    m = s.read(ctx, v)
    kid = s.get(ctx, m, "kid")
    key: str | None = None
    if ("hmac_key" in m) == ("hmac_key_file" in m):
        ctx.error(v, "give exactly one of 'hmac_key' and 'hmac_key_file'")
    else:
        key = s.get(ctx, m, "hmac_key") or s.get(ctx, m, "hmac_key_file")
    if kid is None or key is None:
        return None
    return Eab(kid, key)


def staging(ctx: Checker, v: Value, state_dir: Path) -> Staging | None:
    s = spec.STAGING
    m = s.read(ctx, v)
    authority = ca(ctx, m["ca"]) if "ca" in m else None
    folder = s.get(ctx, m, "state_dir", state_dir / "staging")
    policy = Unreachable(s.get(ctx, m, "on_unreachable"))
    remember = s.get(ctx, m, "remember_for")
    return None if authority is None else Staging(authority, folder, policy, remember)


def policy(ctx: Checker, v: Value) -> Policy:
    s = spec.POLICY
    return s.build(ctx, s.read(ctx, v), Policy)
