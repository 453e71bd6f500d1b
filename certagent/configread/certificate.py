"""Each certificate: its names and challenges, its deploy (templates, links, the
commands, the endpoints) and its staging target.

Side effects: none.
"""

from __future__ import annotations

from typing import cast

from .. import configspec as spec
from .. import layout
from ..configkinds import Checker, Section, Value, kind_of
from ..model import (
    CertSpec,
    ChallengeSpec,
    DeploySpec,
    Dns01Hook,
    Dns01Persist,
    Dns01Rfc2136,
    Endpoint,
    Http01Standalone,
    Http01Webroot,
    KeyType,
    LinkSpec,
    Propagation,
    StagingTarget,
    TemplateSpec,
    TlsAlpn01Standalone,
)
from .common import endpoints, roots


def certificates(ctx: Checker, v: Value) -> tuple[CertSpec, ...]:
    found = (certificate(ctx, name, sub)
             for name, sub in (spec.CERTIFICATES.convert(ctx, v) or {}).items())  # fmt: skip
    return tuple(cert for cert in found if cert is not None)


def certificate(ctx: Checker, name: str, v: Value) -> CertSpec | None:
    s = spec.CERTIFICATE
    m = s.read(ctx, v)
    names = s.get(ctx, m, "names")
    key_type = KeyType(s.get(ctx, m, "key_type"))
    default = challenge(ctx, m["challenge"]) if "challenge" in m else None
    if names is None or default is None:
        return None
    deployed = deploy(ctx, m["deploy"], names) if "deploy" in m else None
    target = None
    if "staging" in m and m["staging"].value is not False:
        if deployed is None:
            ctx.error(m["staging"], "a staging target rehearses a deploy: add a 'deploy' section")
        else:
            target = staging_target(ctx, m["staging"], deployed, names)
    per_name: dict[str, ChallengeSpec] = {}
    if "challenges" in m:
        for for_name, sub in (
            spec.CERTIFICATE["challenges"].kind.convert(ctx, m["challenges"]) or {}
        ).items():
            key = for_name.lower().rstrip(".")
            if key not in names:
                ctx.error(sub, f"{for_name} is not one of this certificate's names")
                continue
            chosen = challenge(ctx, sub)
            if chosen is not None:
                per_name[key] = chosen
    return s.build(ctx, m, CertSpec, name=name, names=names, key_type=key_type,
                   challenge=default, deploy=deployed, staging=target,
                   challenges=per_name)  # fmt: skip


def staging_target(
    ctx: Checker, v: Value, deployed: DeploySpec, names: tuple[str, ...]
) -> StagingTarget | None:
    s = spec.STAGING_TARGET
    m = s.read(ctx, v)
    folder = s.get(ctx, m, "dir")
    waived = unrehearsed(ctx, m, deployed, v)
    where = endpoints(ctx, s, m, names[0])
    way = challenge(ctx, m["challenge"]) if "challenge" in m else None
    test, hook = s.get(ctx, m, "test"), s.get(ctx, m, "hook")
    if folder is None:
        return None
    return StagingTarget(
        dir=folder,
        vars=s.get(ctx, m, "vars"),
        test=None if "test" in waived else test,
        hook=None if "hook" in waived else hook,
        user=s.get(ctx, m, "user"),
        endpoints=where,
        verify_timeout=s.get(ctx, m, "verify_timeout"),
        trust_roots=roots(ctx, s, m, v),
        challenge=way,
    )


def unrehearsed(ctx: Checker, m: dict[str, Value], deployed: DeploySpec, v: Value) -> set[str]:
    """A production hook or config test must have a staging counterpart, or be waived
    with `hook: none` / `test: none` and a `reason`: else it is never rehearsed."""
    waived: set[str] = {k for k in ("hook", "test") if k in m and m[k].value == "none"}
    if waived and not (isinstance(m.get("reason", Value(None, "", 0)).value, str)):
        ctx.error(v, f"{' and '.join(sorted(waived))}: none needs a 'reason'")
    for key, production in (("hook", deployed.hook), ("test", deployed.test)):
        if production is not None and key not in m:
            what = "post-run hook" if key == "hook" else "config test"
            ctx.error(
                v,
                f"the production {what} would never be rehearsed: give the staging "
                f"instance's own '{key}', or '{key}: none' with a 'reason'",
            )
    return waived


def deploy(ctx: Checker, v: Value, names: tuple[str, ...]) -> DeploySpec:
    s = spec.DEPLOY
    m = s.read(ctx, v)
    unwatched = None
    if "endpoints" in m and m["endpoints"].value == "none":
        where: tuple[Endpoint, ...] = ()
        unwatched = s.get(ctx, m, "endpoints_reason")
        if unwatched is None:
            ctx.error(m["endpoints"], "endpoints: none needs an 'endpoints_reason'")
    elif "endpoints" in m:
        where = endpoints(ctx, s, m, names[0])
    else:
        where = tuple(Endpoint(n, 443, n) for n in names if not n.startswith("*."))
    return DeploySpec(
        templates=templates(ctx, m["templates"]) if "templates" in m else (),
        links=links(ctx, m["links"]) if "links" in m else (),
        haproxy_socket=s.get(ctx, m, "haproxy_socket"),
        vars=s.get(ctx, m, "vars"),
        test=s.get(ctx, m, "test"),
        hook=s.get(ctx, m, "hook"),
        user=s.get(ctx, m, "user"),
        endpoints=where,
        verify_timeout=s.get(ctx, m, "verify_timeout"),
        trust_roots=roots(ctx, s, m, v),
        min_free_bytes=s.get(ctx, m, "min_free_mb") * 1024 * 1024,
        unwatched=unwatched,
        group=s.get(ctx, m, "group"),
    )


def templates(ctx: Checker, v: Value) -> tuple[TemplateSpec, ...]:
    if not isinstance(v.value, list):
        ctx.error(v, f"expected a list of {{template, dest}}, got {kind_of(v.value)}")
        return ()
    s = spec.TEMPLATE
    out, seen = [], set()
    for item in v.value:
        m = s.read(ctx, item)
        template, dest = s.get(ctx, m, "template"), s.get(ctx, m, "dest")
        if template is None or dest is None:
            continue
        if dest.name in seen:
            ctx.error(m["dest"], f"another template already renders a file named {dest.name}")
            continue
        seen.add(dest.name)
        out.append(TemplateSpec(template, dest))
    return tuple(out)


LINK_FILES = {"bundle": layout.BUNDLE, "fullchain": layout.FULLCHAIN, "key": layout.KEY,
              "cert": layout.CERT, "chain": layout.CHAIN}  # fmt: skip


def links(ctx: Checker, v: Value) -> tuple[LinkSpec, ...]:
    if not isinstance(v.value, list):
        ctx.error(v, f"expected a list of {{file, dest}}, got {kind_of(v.value)}")
        return ()
    s = spec.LINK
    out: list[LinkSpec] = []
    for item in v.value:
        m = s.read(ctx, item)
        file, dest = s.get(ctx, m, "file"), s.get(ctx, m, "dest")
        if file is None or dest is None:
            continue
        if any(link.dest == dest for link in out):
            ctx.error(m["dest"], f"another link already goes to {dest}")
            continue
        out.append(LinkSpec(LINK_FILES[file], dest))
    return tuple(out)


def challenge(ctx: Checker, v: Value) -> ChallengeSpec | None:
    """A challenge; one in `defaults` is converted once for all who share it."""
    if not v.path.startswith("defaults"):
        return _challenge(ctx, v)
    hit = ctx.shared.get(id(v))
    if hit is not None and hit[0] is v:
        return cast("ChallengeSpec | None", hit[1])
    out = _challenge(ctx, v)
    ctx.shared[id(v)] = (v, out)
    return out


def _challenge(ctx: Checker, v: Value) -> ChallengeSpec | None:
    s = spec.CHALLENGE
    m = s.read(ctx, v)
    kind = s.get(ctx, m, "type")
    if kind is None:
        return None
    ways = {
        "http-01": ("webroot", "standalone"),
        "dns-01": ("rfc2136", "hook"),
        "dns-persist-01": (),
        "tls-alpn-01": ("standalone",),
    }[kind]
    given = [k for k in ("webroot", "standalone", "rfc2136", "hook") if k in m]
    if kind == "dns-persist-01":
        return _persist(ctx, s, m, given)
    for key in ("issuer", "persist_until"):
        if key in m:
            ctx.error(m[key], "only for dns-persist-01")
    if len(given) != 1 or given[0] not in ways:
        ctx.error(v, f"{kind} needs {'exactly one of ' if len(ways) > 1 else ''}"
                  f"{' and '.join(repr(w) for w in ways)}"
                  + (f" (given: {', '.join(given)})" if given else ""))  # fmt: skip
        return None
    if kind != "dns-01":
        for key in ("nameservers", "resolver", "propagation_timeout", "ttl"):
            if key in m:
                ctx.error(m[key], "only for dns-01")
    if "webroot" in m:
        root = s.get(ctx, m, "webroot")
        return None if root is None else Http01Webroot(root)
    if "standalone" in m:
        ss = spec.STANDALONE
        sm = ss.read(ctx, m["standalone"])
        port = ss.get(ctx, sm, "port")
        if port is None:
            return None
        if kind == "tls-alpn-01":
            return TlsAlpn01Standalone(ss.get(ctx, sm, "address"), port)
        return Http01Standalone(ss.get(ctx, sm, "address"), port)
    propagation = _propagation(ctx, s, m)
    if "hook" in m:
        command = s.get(ctx, m, "hook")
        return None if command is None else Dns01Hook(command, propagation)
    r = spec.RFC2136
    rm = r.read(ctx, m["rfc2136"])
    server, key = r.get(ctx, rm, "server"), r.get(ctx, rm, "tsig_key_file")
    if server is None or key is None:
        return None
    zone = r.get(ctx, rm, "zone")
    return Dns01Rfc2136(server, r.get(ctx, rm, "port"), key, zone, propagation)


def _propagation(ctx: Checker, s: Section, m: dict[str, Value]) -> Propagation:
    return Propagation(
        nameservers=tuple(s.get(ctx, m, "nameservers")),
        resolver=s.get(ctx, m, "resolver"),
        timeout=s.get(ctx, m, "propagation_timeout"),
        ttl=s.get(ctx, m, "ttl"),
    )


def _persist(ctx: Checker, s: Section, m: dict[str, Value], given: list[str]) -> Dns01Persist:
    """dns-persist-01: nothing to publish per order, so no way of publishing."""
    for key in (*given, *(k for k in ("propagation_timeout", "ttl") if k in m)):
        ctx.error(m[key], "not for dns-persist-01: its record is published once, by you")
    return Dns01Persist(s.get(ctx, m, "issuer"), s.get(ctx, m, "persist_until"),
                        _propagation(ctx, s, m))  # fmt: skip
