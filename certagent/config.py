"""YAML configuration -> validated, frozen `model.Config`.

The only module that imports `yaml`. Parsing is strict: unknown keys, wrong
types, duplicate keys and impossible combinations are collected and reported
together, each with its key path and line, as one `ConfigError` (exit 78).

Side effects: reads the configuration file (and EAB key files it names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import configspec as spec
from . import layout
from .configkinds import (
    Checker,
    Section,
    Value,
    human,
    ip_name,
    kind_of,
    read_bounded,
)
from .errors import ConfigError, ConfigProblem
from .model import (
    CASpec,
    CertSpec,
    ChallengeSpec,
    Config,
    DeploySpec,
    Dns01Hook,
    Dns01Rfc2136,
    Eab,
    Email,
    Endpoint,
    Heartbeat,
    Http01Standalone,
    Http01Webroot,
    Keepalived,
    KeyType,
    LinkSpec,
    Monitor,
    MonitorEndpoint,
    Notify,
    OnBackup,
    Peer,
    Policy,
    Propagation,
    Staging,
    StagingTarget,
    TemplateSpec,
    TlsAlpn01Standalone,
    Unreachable,
    Webhook,
)

DEFAULT_PATH = Path("/etc/certagent/certagent.yaml")
ENV_VAR = "CERTAGENT_CONFIG"


def default_path(explicit: str | None, environ: dict[str, str]) -> Path:
    """`-c` wins, then $CERTAGENT_CONFIG, then the system default."""
    if explicit:
        return Path(explicit)
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR])
    return DEFAULT_PATH


# Limits that make the loader unable to hang or exhaust memory on any input: a real
# configuration is a few KB deep in a handful of levels.
MAX_BYTES = 1 << 20  # the configuration file
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_VALUES = 20_000  # values after aliases are expanded (a "billion laughs" stops here)
_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_STR = "tag:yaml.org,2002:str"
# libyaml's parser when PyYAML was built with it (PyPI's wheels are): ~10x faster, and its
# event parser is iterative, so the depth check below reads any input without recursing.
_FAST: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _libyaml_version() -> tuple[int, ...]:
    try:
        return tuple(yaml._yaml.get_version())
    except AttributeError:
        return ()


# libyaml from 0.2.5 refuses nesting past 1000 levels itself, so composing cannot recurse
# without bound and the depth is checked while the tree is built (one pass, not two).
_BOUNDED = _FAST is not yaml.SafeLoader and _libyaml_version() >= (0, 2, 5)


def load(path: Path) -> Config:
    try:
        text = read_bounded(path, MAX_BYTES).decode("utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigProblem("", f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [ConfigProblem("", "not UTF-8 text")]) from exc
    except ValueError as exc:
        raise ConfigError(str(path), [ConfigProblem("", str(exc))]) from exc
    return parse(text, path)


def parse(text: str, source: Path) -> Config:
    ctx = _Ctx(source)
    try:
        if "\0" in text:
            at = text[: text.index("\0")].count("\n") + 1
            raise _Refused("the file contains a NUL byte", at)
        if not _BOUNDED:
            _check_shape(text)
        node = yaml.compose(text, Loader=_FAST)
    except _Refused as exc:
        raise ConfigError(str(source), [ConfigProblem("", exc.message, exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        if "maximum nesting depth" in problem:  # libyaml's own limit (1000 levels)
            problem = f"nested deeper than {MAX_DEPTH} levels"
        raise ConfigError(
            str(source), [ConfigProblem("", f"invalid YAML: {problem}", line)]
        ) from exc
    if node is None:
        raise ConfigError(str(source), [ConfigProblem("", "the file is empty")])
    try:
        root = ctx.value(node, "")
    except _Refused as exc:
        raise ConfigError(str(source), [ConfigProblem(exc.path, exc.message, exc.line)]) from None
    config = _config(ctx, root)
    if ctx.problems or config is None:
        raise ConfigError(str(source), sorted(ctx.problems, key=lambda p: p.line or 0))
    return config


# -- the YAML tree with positions -------------------------------------------------


class _Refused(Exception):
    """The document is unsafe to read any further (too deep, too big, a bad tag)."""

    def __init__(self, message: str, line: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.message, self.line, self.path = message, line, path


def _check_shape(text: str) -> None:
    """Refuse over-deep nesting from the event stream, before composing: without libyaml
    (or an old one), the composer recurses once per level without a bound."""
    depth = 0
    for event in yaml.parse(text, Loader=_FAST):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line = mark.line + 1 if mark is not None else None
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


@dataclass
class _Ctx(Checker):
    """Builds the YAML tree with positions, and collects problems."""

    values: int = 0  # values built so far, aliases expanded
    _active: set[int] = field(default_factory=set)  # nodes on the path being built
    _loader: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))

    def value(self, node: yaml.Node, path: str, depth: int = 0) -> Value:
        """Build the tree with positions. Aliases are expanded, but a self-referencing
        alias, an expansion past MAX_VALUES, nesting past MAX_DEPTH and any tag beyond
        plain YAML are refused."""
        line = node.start_mark.line + 1
        self.values += 1
        if self.values > MAX_VALUES:
            raise _Refused(
                f"more than {MAX_VALUES} values once aliases are expanded (an alias bomb?)",
                line,
                path,
            )
        if id(node) in self._active:
            raise _Refused("an alias refers to a value that contains it", line, path)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if depth >= MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", line, path)
            if node.tag not in _COLLECTION_TAGS:
                raise _Refused(f"unsupported YAML tag {node.tag}", line, path)
            self._active.add(id(node))
            try:
                return Value(self._collection(node, path, depth + 1), path, line)
            finally:
                self._active.discard(id(node))
        if node.tag == _STR:  # most values: the text itself, as the constructor gives it
            return Value(node.value, path, line)
        if node.tag not in _TAGS:
            raise _Refused(f"unsupported YAML tag {node.tag}", line, path)
        try:
            return Value(self._loader.construct_object(node, deep=True), path, line)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            text = str(node.value)[:40]
            why = str(exc).split(":")[0]  # e.g. "Exceeds the limit (4300 digits) ..."
            raise _Refused(f"unreadable value {text!r}: {why}", line, path) from None

    def _collection(self, node: yaml.Node, path: str, depth: int) -> dict[str, Value] | list[Value]:
        if isinstance(node, yaml.SequenceNode):
            return [self.value(n, f"{path}[{i}]", depth) for i, n in enumerate(node.value)]
        out: dict[str, Value] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise _Refused("a key must be a plain word", knode.start_mark.line + 1, path)
            key = str(knode.value)
            sub = f"{path}.{key}" if path else key
            if key in out:
                self.error(sub, "duplicate key", knode.start_mark.line + 1)
            out[key] = self.value(vnode, sub, depth)
        return out


# -- sections: the description's keys, kinds and defaults, plus the rules across keys --


def _config(ctx: _Ctx, root: Value) -> Config | None:
    top = spec.TOP
    m = top.read(ctx, root)
    state_dir = top.get(ctx, m, "state_dir")
    ca = _ca(ctx, m["ca"]) if "ca" in m else None
    staging = _staging(ctx, m["staging"], state_dir) if "staging" in m else None
    failover = _failover(ctx, m["failover"]) if "failover" in m else None
    textfile = None
    if "metrics" in m:
        textfile = spec.METRICS.get(ctx, spec.METRICS.read(ctx, m["metrics"]), "textfile")
    certs = _certificates(ctx, m["certificates"]) if "certificates" in m else ()
    if "certificates" in m and isinstance(m["certificates"].value, dict):
        _check_staging_targets(ctx, m["certificates"], certs, "staging" in m)
    for cert in certs:
        if cert.failover_instance is None:
            continue
        known = {failover.instance, *failover.instances} if failover else set()
        if cert.failover_instance not in known:
            ctx.error(
                f"certificates.{cert.name}.failover_instance",
                f"{cert.failover_instance!r} is not a configured keepalived instance "
                f"(failover.keepalived.instance or .instances: "
                f"{', '.join(sorted(known)) or 'none'})",
                m["certificates"].line,
            )
    if ca is None:
        return None
    return Config(
        ctx.source,
        state_dir,
        ca,
        _policy(ctx, m["policy"]) if "policy" in m else Policy(),
        certs,
        tuple(top.get(ctx, m, "template_dirs")),
        staging,
        _monitor(ctx, m["monitor"]) if "monitor" in m else Monitor(),
        textfile,
        _notify(ctx, m["notify"]) if "notify" in m else Notify(),
        _heartbeat(ctx, m["heartbeat"]) if "heartbeat" in m else None,
        failover,
        top.get(ctx, m, "state_group"),
    )


def _notify(ctx: _Ctx, v: Value) -> Notify:
    m = spec.NOTIFY.read(ctx, v)
    webhook = None
    if "webhook" in m:
        w = spec.WEBHOOK.read(ctx, m["webhook"])
        url = spec.WEBHOOK.get(ctx, w, "url")
        if url is not None:
            webhook = spec.WEBHOOK.build(
                ctx, w, Webhook, url=url, trust_roots=_roots(ctx, spec.WEBHOOK, w, m["webhook"])
            )
    email = _email(ctx, m["email"]) if "email" in m else None
    return spec.NOTIFY.build(ctx, m, Notify, webhook=webhook, email=email)


def _email(ctx: _Ctx, v: Value) -> Email | None:
    s = spec.EMAIL
    m = s.read(ctx, v)
    host = s.get(ctx, m, "host")
    sender = s.get(ctx, m, "from")
    to = s.get(ctx, m, "to", [])
    starttls = s.get(ctx, m, "starttls")
    if not starttls and "username" in m:
        ctx.error(m["starttls"], "refusing to send a password without STARTTLS")
    password = s.get(ctx, m, "password_file")
    if ("username" in m) != ("password_file" in m):
        ctx.error(v, "give both 'username' and 'password_file', or neither")
    if host is None or sender is None or not to:
        return None
    return Email(
        host=host,
        port=s.get(ctx, m, "port"),
        sender=sender.removeprefix("mailto:"),
        recipients=tuple(t.removeprefix("mailto:") for t in to),
        starttls=starttls,
        username=s.get(ctx, m, "username"),
        password=password,
        timeout=s.get(ctx, m, "timeout"),
        trust_roots=_roots(ctx, s, m, v),
    )


def _heartbeat(ctx: _Ctx, v: Value) -> Heartbeat | None:
    s = spec.HEARTBEAT
    m = s.read(ctx, v)
    url = s.get(ctx, m, "url")
    if url is None:
        return None
    return s.build(ctx, m, Heartbeat, url=url, trust_roots=_roots(ctx, s, m, v))


def _failover(ctx: _Ctx, v: Value) -> Keepalived | None:
    m = spec.FAILOVER.read(ctx, v)
    if "keepalived" not in m:
        return None
    v = m["keepalived"]
    s = spec.KEEPALIVED
    k = s.read(ctx, v)
    instance = s.get(ctx, k, "instance")
    address = s.get(ctx, k, "address")
    peer = _peer(ctx, k["peer"]) if "peer" in k else None
    if peer is not None and address and peer.address == address:
        ctx.error(k["peer"], f"the peer's address is this node's own ({address})")
    instances = _instances(ctx, k["instances"], instance) if "instances" in k else {}
    if not (instance and address and peer):
        return None
    return Keepalived(
        instance=instance,
        address=address,
        peer=peer,
        vips=tuple(s.get(ctx, k, "vips")),
        pid_file=str(s.get(ctx, k, "pid_file")),
        dump_dir=str(s.get(ctx, k, "dump_dir")),
        dump_timeout=s.get(ctx, k, "dump_timeout"),
        max_advert_age=s.get(ctx, k, "max_advert_age"),
        on_backup=OnBackup(s.get(ctx, k, "on_backup")),
        instances=instances,
    )


def _instances(ctx: _Ctx, v: Value, default: str | None) -> dict[str, tuple[str, ...]]:
    """failover.keepalived.instances: {NAME: {vips: [...]}}, besides `instance`."""
    out = {}
    for name, sub in (spec.INSTANCES.convert(ctx, v) or {}).items():
        if name == default:
            ctx.error(sub, f"{name} is already `instance`; list only the others here")
            continue
        out[name] = tuple(spec.INSTANCE.get(ctx, spec.INSTANCE.read(ctx, sub), "vips"))
    return out


def _peer(ctx: _Ctx, v: Value) -> Peer | None:
    s = spec.PEER
    m = s.read(ctx, v)
    command = s.get(ctx, m, "command")
    address = s.get(ctx, m, "address")
    quote = s.get(ctx, m, "quote", Path(command[0]).name == "ssh" if command else True)
    if not (command and address):
        return None
    return Peer(
        command=tuple(command),
        address=address,
        pid_file=str(s.get(ctx, m, "pid_file")),
        dump_dir=str(s.get(ctx, m, "dump_dir")),
        certagent=tuple(s.get(ctx, m, "certagent")),
        quote=quote,
        timeout=s.get(ctx, m, "timeout"),
    )


def _monitor(ctx: _Ctx, v: Value) -> Monitor:
    s = spec.MONITOR
    m = s.read(ctx, v)
    warning = s.get(ctx, m, "warning_days")
    critical = s.get(ctx, m, "critical_days")
    if critical > warning:
        ctx.error(v, f"critical_days ({critical:g}) is above warning_days ({warning:g})")
    warning_share = s.get(ctx, m, "warning_share")
    critical_share = s.get(ctx, m, "critical_share")
    if critical_share > warning_share:
        ctx.error(v, f"critical_share ({critical_share:g}) is above warning_share "
                  f"({warning_share:g})")  # fmt: skip
    endpoints: list[MonitorEndpoint] = []
    if "endpoints" in m:
        if isinstance(m["endpoints"].value, list):
            seen: set[str] = set()
            for item in m["endpoints"].value:
                ep = _monitor_endpoint(ctx, item)
                if ep is not None and ep.name in seen:
                    ctx.error(item, f"another endpoint is already named {ep.name!r}")
                elif ep is not None:
                    seen.add(ep.name)
                    endpoints.append(ep)
        else:
            ctx.error(m["endpoints"], f"expected a list, got {kind_of(m['endpoints'].value)}")
    return Monitor(
        warning_days=warning,
        critical_days=critical,
        warning_share=warning_share,
        critical_share=critical_share,
        timeout=s.get(ctx, m, "timeout"),
        max_renew_age=s.get(ctx, m, "max_renew_age"),
        trust_roots=_roots(ctx, s, m, v),
        endpoints=tuple(endpoints),
    )


def _monitor_endpoint(ctx: _Ctx, v: Value) -> MonitorEndpoint | None:
    s = spec.MONITOR_ENDPOINT
    m = s.read(ctx, v)
    parsed = s.get(ctx, m, "address")
    if parsed is None:
        return None
    host, port = parsed
    return MonitorEndpoint(
        name=s.get(ctx, m, "name", m["address"].value),
        endpoint=Endpoint(host, port, s.get(ctx, m, "sni", host)),
        starttls=s.get(ctx, m, "starttls"),
        warning_days=s.get(ctx, m, "warning_days"),
        critical_days=s.get(ctx, m, "critical_days"),
        trust_roots=_roots(ctx, s, m, v),
    )


def _staging(ctx: _Ctx, v: Value, state_dir: Path) -> Staging | None:
    s = spec.STAGING
    m = s.read(ctx, v)
    ca = _ca(ctx, m["ca"]) if "ca" in m else None
    folder = s.get(ctx, m, "state_dir", state_dir / "staging")
    if folder == state_dir:
        ctx.error(m["state_dir"], "must differ from the production state_dir")
    policy = Unreachable(s.get(ctx, m, "on_unreachable"))
    remember = s.get(ctx, m, "remember_for")
    return None if ca is None else Staging(ca, folder, policy, remember)


def _check_staging_targets(
    ctx: _Ctx, v: Value, certs: tuple[CertSpec, ...], have_staging: bool
) -> None:
    """Every deployed certificate is rehearsed or explicitly opted out; targets need a CA."""
    for cert in certs:
        sub = v.value[cert.name]
        entry = sub.value.get("staging") if isinstance(sub.value, dict) else None
        opted_out = entry is not None and entry.value is False
        if cert.staging is not None and not have_staging:
            ctx.error(entry or sub, "a staging target needs a top-level 'staging' CA")
        elif have_staging and cert.deploy is not None and cert.staging is None and not opted_out:
            ctx.error(
                sub,
                "a staging CA is configured, so this certificate needs a 'staging' target "
                "(or 'staging: false' to deploy it unrehearsed)",
            )


def _ca(ctx: _Ctx, v: Value) -> CASpec | None:
    s = spec.CA
    m = s.read(ctx, v)
    directory = s.get(ctx, m, "directory")
    contact = s.get(ctx, m, "contact")
    roots = _roots(ctx, s, m, v)
    eab = _eab(ctx, m["eab"]) if "eab" in m else None
    if directory is None:
        return None
    return s.build(ctx, m, CASpec, directory=directory, contact=tuple(contact),
                   trust_roots=roots, eab=eab)  # fmt: skip


def _eab(ctx: _Ctx, v: Value) -> Eab | None:
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


def _policy(ctx: _Ctx, v: Value) -> Policy:
    s = spec.POLICY
    m = s.read(ctx, v)
    policy = s.build(ctx, m, Policy)
    if policy.failure_backoff > policy.max_backoff:
        ctx.error(
            m.get("failure_backoff", v),
            f"failure_backoff ({human(policy.failure_backoff)}) is above max_backoff "
            f"({human(policy.max_backoff)})",
        )
    return policy


def _certificates(ctx: _Ctx, v: Value) -> tuple[CertSpec, ...]:
    certs: list[CertSpec] = []
    owner: dict[str, str] = {}
    for name, sub in (spec.CERTIFICATES.convert(ctx, v) or {}).items():
        cert = _certificate(ctx, name, sub)
        if cert is None:
            continue
        for dns in cert.names:
            if dns in owner:
                ctx.error(
                    f"{sub.path}.names", f"{dns} is also in certificate '{owner[dns]}'", sub.line
                )
            owner.setdefault(dns, name)
        certs.append(cert)
    return tuple(certs)


def _certificate(ctx: _Ctx, name: str, v: Value) -> CertSpec | None:
    s = spec.CERTIFICATE
    m = s.read(ctx, v)
    names = s.get(ctx, m, "names")
    key_type = KeyType(s.get(ctx, m, "key_type"))
    challenge = _challenge(ctx, m["challenge"]) if "challenge" in m else None
    if names is None or challenge is None:
        return None
    deploy = _deploy(ctx, m["deploy"], names) if "deploy" in m else None
    staging = None
    if "staging" in m and m["staging"].value is not False:
        if deploy is None:
            ctx.error(m["staging"], "a staging target rehearses a deploy: add a 'deploy' section")
        else:
            staging = _staging_target(ctx, m["staging"], deploy, names)
    per_name: dict[str, ChallengeSpec] = {}
    if "challenges" in m:
        for for_name, sub in (
            spec.CERTIFICATE["challenges"].kind.convert(ctx, m["challenges"]) or {}
        ).items():
            key = for_name.lower().rstrip(".")
            if key not in names:
                ctx.error(sub, f"{for_name} is not one of this certificate's names")
                continue
            chosen = _challenge(ctx, sub)
            if chosen is not None:
                per_name[key] = chosen
    for dns in names:
        chosen_for = per_name.get(dns, challenge)
        if ip_name(dns) and isinstance(chosen_for, Dns01Rfc2136 | Dns01Hook):
            ctx.error(m["names"], f"{dns} is an IP address: dns-01 cannot validate it "
                      "(RFC 8738 section 7); use http-01 or tls-alpn-01")  # fmt: skip
        if dns.startswith("*.") and not isinstance(chosen_for, Dns01Rfc2136 | Dns01Hook):
            what = "tls-alpn-01" if isinstance(chosen_for, TlsAlpn01Standalone) else "http-01"
            ctx.error(
                m["names"],
                f"wildcard {dns} needs challenge type dns-01 (rfc2136 or hook); "
                f"{what} cannot validate it",
            )
    return s.build(ctx, m, CertSpec, name=name, names=names, key_type=key_type,
                   challenge=challenge, deploy=deploy, staging=staging,
                   challenges=per_name)  # fmt: skip


def _staging_target(
    ctx: _Ctx, v: Value, deploy: DeploySpec, names: tuple[str, ...]
) -> StagingTarget | None:
    s = spec.STAGING_TARGET
    m = s.read(ctx, v)
    folder = s.get(ctx, m, "dir")
    waived = _unrehearsed(ctx, m, deploy, v)
    if folder is not None:
        for dest, _ in deploy.placements():
            if folder / dest.name == dest:
                ctx.error(m["dir"], f"would render over the production file {dest}")
    endpoints = _endpoints(ctx, s, m, names[0])
    for e in endpoints:
        if e in deploy.endpoints:
            ctx.error(m["endpoints"], f"{e} is a production endpoint")
    challenge = _challenge(ctx, m["challenge"]) if "challenge" in m else None
    test, hook = s.get(ctx, m, "test"), s.get(ctx, m, "hook")
    if folder is None:
        return None
    return StagingTarget(
        dir=folder,
        vars=s.get(ctx, m, "vars"),
        test=None if "test" in waived else test,
        hook=None if "hook" in waived else hook,
        user=s.get(ctx, m, "user"),
        endpoints=endpoints,
        verify_timeout=s.get(ctx, m, "verify_timeout"),
        trust_roots=_roots(ctx, s, m, v),
        challenge=challenge,
    )


def _unrehearsed(ctx: _Ctx, m: dict[str, Value], deploy: DeploySpec, v: Value) -> set[str]:
    """A production hook or config test must have a staging counterpart, or be waived
    with `hook: none` / `test: none` and a `reason`: else it is never rehearsed."""
    waived: set[str] = {k for k in ("hook", "test") if k in m and m[k].value == "none"}
    if waived and not (isinstance(m.get("reason", Value(None, "", 0)).value, str)):
        ctx.error(v, f"{' and '.join(sorted(waived))}: none needs a 'reason'")
    for key, production in (("hook", deploy.hook), ("test", deploy.test)):
        if production is not None and key not in m:
            what = "post-run hook" if key == "hook" else "config test"
            ctx.error(
                v,
                f"the production {what} would never be rehearsed: give the staging "
                f"instance's own '{key}', or '{key}: none' with a 'reason'",
            )
    return waived


def _deploy(ctx: _Ctx, v: Value, names: tuple[str, ...]) -> DeploySpec:
    s = spec.DEPLOY
    m = s.read(ctx, v)
    unwatched = None
    if "endpoints" in m and m["endpoints"].value == "none":
        endpoints: tuple[Endpoint, ...] = ()
        unwatched = s.get(ctx, m, "endpoints_reason")
        if unwatched is None:
            ctx.error(m["endpoints"], "endpoints: none needs an 'endpoints_reason'")
    elif "endpoints" in m:
        endpoints = _endpoints(ctx, s, m, names[0])
    else:
        endpoints = tuple(Endpoint(n, 443, n) for n in names if not n.startswith("*."))
    return DeploySpec(
        templates=_templates(ctx, m["templates"]) if "templates" in m else (),
        links=_links(ctx, m["links"]) if "links" in m else (),
        haproxy_socket=s.get(ctx, m, "haproxy_socket"),
        vars=s.get(ctx, m, "vars"),
        test=s.get(ctx, m, "test"),
        hook=s.get(ctx, m, "hook"),
        user=s.get(ctx, m, "user"),
        endpoints=endpoints,
        verify_timeout=s.get(ctx, m, "verify_timeout"),
        trust_roots=_roots(ctx, s, m, v),
        min_free_bytes=s.get(ctx, m, "min_free_mb") * 1024 * 1024,
        unwatched=unwatched,
        group=s.get(ctx, m, "group"),
    )


def _endpoints(
    ctx: _Ctx, s: Section, m: dict[str, Value], default_sni: str
) -> tuple[Endpoint, ...]:
    items = s.get(ctx, m, "endpoints", [])
    if items == "none":  # deploy handles `none` itself; a staging target cannot say it
        return ()
    return tuple(Endpoint(host, port, sni or default_sni, tls) for host, port, sni, tls in items)


def _roots(ctx: _Ctx, s: Section, m: dict[str, Value], v: Value) -> tuple[Path, ...]:
    roots: list[Path] = s.get(ctx, m, "trust_roots", [])
    for i, root in enumerate(roots):
        if not root.is_file():
            ctx.error(f"{v.path}.trust_roots[{i}]", f"no such file: {root}", m["trust_roots"].line)
    return tuple(roots)


def _templates(ctx: _Ctx, v: Value) -> tuple[TemplateSpec, ...]:
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


def _links(ctx: _Ctx, v: Value) -> tuple[LinkSpec, ...]:
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


def _challenge(ctx: _Ctx, v: Value) -> ChallengeSpec | None:
    s = spec.CHALLENGE
    m = s.read(ctx, v)
    kind = s.get(ctx, m, "type")
    if kind is None:
        return None
    ways = {
        "http-01": ("webroot", "standalone"),
        "dns-01": ("rfc2136", "hook"),
        "tls-alpn-01": ("standalone",),
    }[kind]
    given = [k for k in ("webroot", "standalone", "rfc2136", "hook") if k in m]
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
    propagation = Propagation(
        nameservers=tuple(s.get(ctx, m, "nameservers")),
        resolver=s.get(ctx, m, "resolver"),
        timeout=s.get(ctx, m, "propagation_timeout"),
        ttl=s.get(ctx, m, "ttl"),
    )
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
