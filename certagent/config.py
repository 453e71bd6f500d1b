"""YAML configuration -> validated, frozen `model.Config`.

The only module that imports `yaml`. Parsing is strict: unknown keys, wrong
types, duplicate keys and impossible combinations are collected and reported
together, each with its key path and line, as one `ConfigError` (exit 78).

Side effects: reads the configuration file (and EAB key files it names).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError, ConfigProblem
from .model import (
    CASpec,
    CertSpec,
    ChallengeSpec,
    Command,
    Config,
    DeploySpec,
    Eab,
    Email,
    Endpoint,
    Heartbeat,
    Http01Standalone,
    Http01Webroot,
    Keepalived,
    KeyType,
    Monitor,
    MonitorEndpoint,
    Notify,
    OnBackup,
    Peer,
    Policy,
    Staging,
    StagingTarget,
    TemplateSpec,
    Unreachable,
    Webhook,
)

DEFAULT_PATH = Path("/etc/certagent/certagent.yaml")
ENV_VAR = "CERTAGENT_CONFIG"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

T = TypeVar("T")


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
MAX_SECRET_BYTES = 64 * 1024  # password and HMAC key files
_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}
_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
# libyaml's parser when PyYAML was built with it (PyPI's wheels are): ~10x faster, and its
# event parser is iterative, so the depth check below reads any input without recursing.
_FAST: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing more than `limit` (so /dev/zero cannot hang us)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def parse(text: str, source: Path) -> Config:
    ctx = _Ctx(source)
    try:
        _check_shape(text)
        node = yaml.compose(text, Loader=_FAST)
    except _Refused as exc:
        raise ConfigError(str(source), [ConfigProblem("", exc.message, exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
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
    """Refuse NUL bytes and over-deep nesting from the event stream, before composing:
    PyYAML's composer recurses once per level and would hit Python's recursion limit."""
    if "\0" in text:
        raise _Refused("the file contains a NUL byte", text[: text.index("\0")].count("\n") + 1)
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
class _V:
    """A YAML value with its key path and line, for error messages."""

    value: Any
    path: str
    line: int


@dataclass
class _Ctx:
    source: Path
    problems: list[ConfigProblem] = field(default_factory=list)
    values: int = 0  # values built so far, aliases expanded
    _active: set[int] = field(default_factory=set)  # nodes on the path being built
    _loader: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""))

    def error(self, at: _V | str, message: str, line: int | None = None) -> None:
        if isinstance(at, _V):
            self.problems.append(ConfigProblem(at.path, message, at.line))
        else:
            self.problems.append(ConfigProblem(at, message, line))

    def value(self, node: yaml.Node, path: str) -> _V:
        """Build the tree with positions. Aliases are expanded, but a self-referencing
        alias, an expansion past MAX_VALUES and any tag beyond plain YAML are refused."""
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
            if node.tag not in _COLLECTION_TAGS:
                raise _Refused(f"unsupported YAML tag {node.tag}", line, path)
            self._active.add(id(node))
            try:
                return _V(self._collection(node, path), path, line)
            finally:
                self._active.discard(id(node))
        if node.tag not in _TAGS:
            raise _Refused(f"unsupported YAML tag {node.tag}", line, path)
        try:
            return _V(self._loader.construct_object(node, deep=True), path, line)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            text = str(node.value)[:40]
            why = str(exc).split(":")[0]  # e.g. "Exceeds the limit (4300 digits) ..."
            raise _Refused(f"unreadable value {text!r}: {why}", line, path) from None

    def _collection(self, node: yaml.Node, path: str) -> dict[str, _V] | list[_V]:
        if isinstance(node, yaml.SequenceNode):
            return [self.value(n, f"{path}[{i}]") for i, n in enumerate(node.value)]
        out: dict[str, _V] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise _Refused("a key must be a plain word", knode.start_mark.line + 1, path)
            key = str(knode.value)
            sub = f"{path}.{key}" if path else key
            if key in out:
                self.error(sub, "duplicate key", knode.start_mark.line + 1)
            out[key] = self.value(vnode, sub)
        return out

    def mapping(self, v: _V, allowed: Set[str], required: Set[str] = frozenset()) -> dict[str, _V]:
        if not isinstance(v.value, dict):
            self.error(v, f"expected a mapping, got {_kind(v.value)}")
            return {}
        for key, sub in v.value.items():
            if key not in allowed:
                self.error(sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - v.value.keys()):
            self.error(v, f"missing required key '{key}'")
        return {k: s for k, s in v.value.items() if k in allowed}

    def get(
        self, m: dict[str, _V], key: str, conv: Callable[[_Ctx, _V], T | None], default: T
    ) -> T:
        if key not in m:
            return default
        result = conv(self, m[key])
        return default if result is None else result


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


# -- scalar converters: return None after reporting a problem ------------------------


def _str(ctx: _Ctx, v: _V) -> str | None:
    if isinstance(v.value, str) and v.value.strip() and "\0" not in v.value:
        return v.value
    what = "a string with a NUL byte" if isinstance(v.value, str) and v.value else _kind(v.value)
    ctx.error(v, f"expected a non-empty string, got {what}")
    return None


def _word(ctx: _Ctx, v: _V) -> str | None:
    """A string on one line (a path, a host, a user): no control characters at all."""
    s = _str(ctx, v)
    if s is not None and any(ord(c) < 32 or ord(c) == 127 for c in s):
        ctx.error(v, f"expected one line without control characters, got {s!r}")
        return None
    return s


def _abs_path(ctx: _Ctx, v: _V) -> Path | None:
    s = _word(ctx, v)
    if s is None:
        return None
    if not s.startswith("/"):
        ctx.error(v, f"expected an absolute path, got {s!r}")
        return None
    return Path(s)


def _url(ctx: _Ctx, v: _V) -> str | None:
    s = _word(ctx, v)
    if s is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", s):
        ctx.error(v, f"expected an http(s) URL, got {s!r}")
        return None
    return s


_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0


def _between(lo: float, hi: float, *, above: bool = False) -> Callable[[_Ctx, _V], float | None]:
    """A duration converter bounded to [lo, hi] (or (lo, hi] with `above`)."""

    def convert(ctx: _Ctx, v: _V) -> float | None:
        seconds = _seconds(v.value)
        if seconds is None:
            ctx.error(v, f"expected a duration like 30, '90s', '5m', '2h' or '1d', got {v.value!r}")
            return None
        if not (lo < seconds if above else lo <= seconds) or seconds > hi:
            low = f"above {_human(lo)}" if above else f"at least {_human(lo)}"
            ctx.error(v, f"expected a duration {low} and at most {_human(hi)}, got {v.value!r}")
            return None
        return seconds

    return convert


def _seconds(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw) if abs(raw) < 1e300 else math.inf
    elif isinstance(raw, str) and (m := _DURATION.fullmatch(raw.strip())):
        value = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _human(seconds: float) -> str:
    for unit, size in (("d", _DAY), ("h", _HOUR), ("m", _MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


_duration = _between(0, 366 * _DAY)  # how long something is kept or waited for
_timeout = _between(0, _DAY, above=True)  # a network or process deadline


def _port(ctx: _Ctx, v: _V) -> int | None:
    if isinstance(v.value, int) and not isinstance(v.value, bool) and 0 < v.value < 65536:
        return v.value
    ctx.error(v, f"expected a port number 1-65535, got {v.value!r}")
    return None


def _fraction(ctx: _Ctx, v: _V) -> float | None:
    if isinstance(v.value, int | float) and not isinstance(v.value, bool) and 0 <= v.value < 1:
        return float(v.value)
    ctx.error(v, f"expected a number from 0 up to (not including) 1, got {v.value!r}")
    return None


def _count_in(lo: int, hi: int) -> Callable[[_Ctx, _V], int | None]:
    def convert(ctx: _Ctx, v: _V) -> int | None:
        if isinstance(v.value, int) and not isinstance(v.value, bool) and lo <= v.value <= hi:
            return v.value
        ctx.error(v, f"expected a whole number from {lo} to {hi}, got {_short(v.value)}")
        return None

    return convert


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _list(ctx: _Ctx, v: _V, conv: Callable[[_Ctx, _V], T | None]) -> list[T] | None:
    if not isinstance(v.value, list):
        ctx.error(v, f"expected a list, got {_kind(v.value)}")
        return None
    out = [conv(ctx, item) for item in v.value]
    return [x for x in out if x is not None]


# -- sections ------------------------------------------------------------------------


def _config(ctx: _Ctx, root: _V) -> Config | None:
    m = ctx.mapping(
        root,
        {
            "state_dir",
            "ca",
            "policy",
            "certificates",
            "template_dirs",
            "staging",
            "monitor",
            "metrics",
            "notify",
            "heartbeat",
            "failover",
            "state_group",
        },
        {"ca", "certificates"},
    )
    state_dir = ctx.get(m, "state_dir", _abs_path, Path("/var/lib/certagent"))
    template_dirs: list[Path] = ctx.get(m, "template_dirs", _paths, [])
    ca = _ca(ctx, m["ca"]) if "ca" in m else None
    policy = _policy(ctx, m["policy"]) if "policy" in m else Policy()
    staging = _staging(ctx, m["staging"], state_dir) if "staging" in m else None
    monitor = _monitor(ctx, m["monitor"]) if "monitor" in m else Monitor()
    textfile = None
    if "metrics" in m:
        mm = ctx.mapping(m["metrics"], {"textfile"}, {"textfile"})
        textfile = _abs_path(ctx, mm["textfile"]) if "textfile" in mm else None
    notify = _notify(ctx, m["notify"]) if "notify" in m else Notify()
    heartbeat = _heartbeat(ctx, m["heartbeat"]) if "heartbeat" in m else None
    failover = _failover(ctx, m["failover"]) if "failover" in m else None
    state_group = _group(ctx, m["state_group"]) if "state_group" in m else None
    certs = _certificates(ctx, m["certificates"]) if "certificates" in m else ()
    if "certificates" in m and isinstance(m["certificates"].value, dict):
        _check_staging_targets(ctx, m["certificates"], certs, "staging" in m)
    for spec in certs:
        if spec.failover_instance is None:
            continue
        known = {failover.instance, *failover.instances} if failover else set()
        if spec.failover_instance not in known:
            ctx.error(
                f"certificates.{spec.name}.failover_instance",
                f"{spec.failover_instance!r} is not a configured keepalived instance "
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
        policy,
        certs,
        tuple(template_dirs),
        staging,
        monitor,
        textfile,
        notify,
        heartbeat,
        failover,
        state_group,
    )


def _notify(ctx: _Ctx, v: _V) -> Notify:
    m = ctx.mapping(v, {"expiry_days", "webhook", "email"})
    webhook = None
    if "webhook" in m:
        keys = {"url", "timeout", "retries", "backoff", "trust_roots"}
        w = ctx.mapping(m["webhook"], keys, {"url"})
        url = _url(ctx, w["url"]) if "url" in w else None
        if url is not None:
            webhook = Webhook(
                url,
                ctx.get(w, "timeout", _timeout, 10.0),
                ctx.get(w, "retries", _count_in(1, 20), 3),
                ctx.get(w, "backoff", _between(0, _HOUR), 2.0),
                _roots(ctx, w, m["webhook"]),
            )
    email = _email(ctx, m["email"]) if "email" in m else None
    return Notify(ctx.get(m, "expiry_days", _days, 14.0), webhook, email)


def _email(ctx: _Ctx, v: _V) -> Email | None:
    keys = {
        "host",
        "port",
        "from",
        "to",
        "starttls",
        "username",
        "password_file",
        "timeout",
        "trust_roots",
    }
    m = ctx.mapping(v, keys, {"host", "from", "to"})
    host = _word(ctx, m["host"]) if "host" in m else None
    sender = _contact(ctx, m["from"]) if "from" in m else None
    to: list[str] = ctx.get(m, "to", _contacts, [])
    starttls = True
    if "starttls" in m:
        if isinstance(m["starttls"].value, bool):
            starttls = m["starttls"].value
        else:
            ctx.error(m["starttls"], "expected true or false")
    if not starttls and "username" in m:
        ctx.error(m["starttls"], "refusing to send a password without STARTTLS")
    password = None
    if "password_file" in m:
        password = _secret(ctx, m["password_file"])
    if ("username" in m) != ("password_file" in m):
        ctx.error(v, "give both 'username' and 'password_file', or neither")
    if host is None or sender is None or not to:
        return None
    return Email(
        host=host,
        port=ctx.get(m, "port", _port, 587),
        sender=sender.removeprefix("mailto:"),
        recipients=tuple(t.removeprefix("mailto:") for t in to),
        starttls=starttls,
        username=ctx.get(m, "username", _word, "") or None,
        password=password,
        timeout=ctx.get(m, "timeout", _timeout, 20.0),
        trust_roots=_roots(ctx, m, v),
    )


def _heartbeat(ctx: _Ctx, v: _V) -> Heartbeat | None:
    m = ctx.mapping(v, {"url", "timeout", "trust_roots"}, {"url"})
    url = _url(ctx, m["url"]) if "url" in m else None
    if url is None:
        return None
    return Heartbeat(url, ctx.get(m, "timeout", _timeout, 10.0), _roots(ctx, m, v))


_VRRP_NAME = re.compile(r"^[A-Za-z0-9_]{1,63}$")


def _failover(ctx: _Ctx, v: _V) -> Keepalived | None:
    m = ctx.mapping(v, {"keepalived"}, {"keepalived"})
    if "keepalived" not in m:
        return None
    v = m["keepalived"]
    keys = {"instance", "address", "peer", "vips", "pid_file", "dump_dir", "dump_timeout",
            "max_advert_age", "on_backup", "instances"}  # fmt: skip
    k = ctx.mapping(v, keys, {"instance", "address", "peer"})
    instance = ctx.get(k, "instance", _word, "")
    if instance and not _VRRP_NAME.fullmatch(instance):
        ctx.error(k["instance"], f"not a keepalived instance name ([A-Za-z0-9_]): {instance!r}")
    address = ctx.get(k, "address", _address, "")
    no_vips: list[str] = []
    vips = [x.split("/")[0] for x in ctx.get(k, "vips", _addresses, no_vips)]
    peer = _peer(ctx, k["peer"]) if "peer" in k else None
    if peer is not None and address and peer.address == address:
        ctx.error(k["peer"], f"the peer's address is this node's own ({address})")
    on_backup = OnBackup.SKIP
    if "on_backup" in k:
        try:
            on_backup = OnBackup(k["on_backup"].value)
        except ValueError:
            ctx.error(k["on_backup"], f"expected one of {', '.join(o.value for o in OnBackup)}")
    age = ctx.get(k, "max_advert_age", _between(0, _HOUR, above=True), -1.0)
    instances = _instances(ctx, k["instances"], instance) if "instances" in k else {}
    if not (instance and address and peer):
        return None
    return Keepalived(
        instance=instance,
        address=address,
        peer=peer,
        vips=tuple(vips),
        pid_file=str(ctx.get(k, "pid_file", _abs_path, Path(Keepalived.pid_file))),
        dump_dir=ctx.get(k, "dump_dir", _dump_dir, Keepalived.dump_dir),
        dump_timeout=ctx.get(
            k, "dump_timeout", _between(0, 5 * _MINUTE, above=True), Keepalived.dump_timeout
        ),
        max_advert_age=None if age < 0 else age,
        on_backup=on_backup,
        instances=instances,
    )


def _instances(ctx: _Ctx, v: _V, default: str) -> dict[str, tuple[str, ...]]:
    """failover.keepalived.instances: {NAME: {vips: [...]}}, besides `instance`."""
    if not isinstance(v.value, dict):
        ctx.error(v, f"expected a mapping of instance names, got {_kind(v.value)}")
        return {}
    out = {}
    for name, sub in v.value.items():
        if not _VRRP_NAME.fullmatch(name):
            ctx.error(sub, f"not a keepalived instance name ([A-Za-z0-9_]): {name!r}")
            continue
        if name == default:
            ctx.error(sub, f"{name} is already `instance`; list only the others here")
            continue
        m = ctx.mapping(sub, {"vips"})
        no_vips: list[str] = []
        out[name] = tuple(x.split("/")[0] for x in ctx.get(m, "vips", _addresses, no_vips))
    return out


def _peer(ctx: _Ctx, v: _V) -> Peer | None:
    keys = {"command", "address", "pid_file", "dump_dir", "certagent", "quote", "timeout"}
    m = ctx.mapping(v, keys, {"command", "address"})
    none: list[str] = []
    command = ctx.get(m, "command", _argv, none)
    address = ctx.get(m, "address", _address, "")
    quote = Path(command[0]).name == "ssh" if command else True
    if "quote" in m:
        if isinstance(m["quote"].value, bool):
            quote = m["quote"].value
        else:
            ctx.error(m["quote"], f"expected true or false, got {m['quote'].value!r}")
    if not (command and address):
        return None
    return Peer(
        command=tuple(command),
        address=address,
        pid_file=str(ctx.get(m, "pid_file", _abs_path, Path(Peer.pid_file))),
        dump_dir=ctx.get(m, "dump_dir", _dump_dir, Peer.dump_dir),
        certagent=tuple(ctx.get(m, "certagent", _argv, list(Peer.certagent))),
        quote=quote,
        timeout=ctx.get(m, "timeout", _timeout, Peer.timeout),
    )


def _dump_dir(ctx: _Ctx, v: _V) -> str | None:
    """`auto` (keepalived's own TMPDIR, read from its process) or an absolute path."""
    if v.value == "auto":
        return "auto"
    path = _abs_path(ctx, v)
    return None if path is None else str(path)


def _argv(ctx: _Ctx, v: _V) -> list[str] | None:
    argv = _list(ctx, v, _str)
    if argv is not None and not argv:
        ctx.error(v, "expected a non-empty list of arguments")
        return None
    return argv


def _address(ctx: _Ctx, v: _V) -> str | None:
    s = _word(ctx, v)
    if s is None:
        return None
    try:
        return str(ipaddress.ip_address(s.strip("[]")))
    except ValueError:
        if _is_dns_name(s.lower()) and not s.startswith("*"):
            return s.lower()
    ctx.error(v, f"expected an IP address or host name, got {s!r}")
    return None


def _addresses(ctx: _Ctx, v: _V) -> list[str] | None:
    out = []
    for s in _list(ctx, v, _word) or []:
        try:
            out.append(str(ipaddress.ip_interface(s)))
        except ValueError:
            ctx.error(v, f"expected IP addresses (address or address/prefix), got {s!r}")
    return out


STARTTLS = ("smtp", "imap", "postgres", "ldap")
MAX_DAYS = 3650


def _days(ctx: _Ctx, v: _V) -> float | None:
    ok = isinstance(v.value, int | float) and not isinstance(v.value, bool)
    if ok and 0 <= v.value <= MAX_DAYS:
        return float(v.value)
    ctx.error(v, f"expected a number of days from 0 to {MAX_DAYS}, got {_short(v.value)}")
    return None


def _monitor(ctx: _Ctx, v: _V) -> Monitor:
    keys = {"warning_days", "critical_days", "timeout", "max_renew_age", "trust_roots", "endpoints"}
    m = ctx.mapping(v, keys)
    d = Monitor()
    warning = ctx.get(m, "warning_days", _days, d.warning_days)
    critical = ctx.get(m, "critical_days", _days, d.critical_days)
    if critical > warning:
        ctx.error(v, f"critical_days ({critical:g}) is above warning_days ({warning:g})")
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
            ctx.error(m["endpoints"], f"expected a list, got {_kind(m['endpoints'].value)}")
    age = ctx.get(m, "max_renew_age", _between(0, 366 * _DAY, above=True), -1.0)
    return Monitor(
        warning_days=warning,
        critical_days=critical,
        timeout=ctx.get(m, "timeout", _between(0, _HOUR, above=True), d.timeout),
        max_renew_age=None if age < 0 else age,
        trust_roots=_roots(ctx, m, v),
        endpoints=tuple(endpoints),
    )


def _monitor_endpoint(ctx: _Ctx, v: _V) -> MonitorEndpoint | None:
    keys = {"name", "address", "sni", "starttls", "warning_days", "critical_days", "trust_roots"}
    m = ctx.mapping(v, keys, {"address"})
    if "address" not in m:
        return None
    text = _word(ctx, m["address"]) or ""
    parsed = _host_port(ctx, m["address"])
    if parsed is None:
        return None
    host, port = parsed
    sni = ctx.get(m, "sni", _word, host)
    starttls = ctx.get(m, "starttls", _word, "") or None
    if starttls is not None and starttls not in STARTTLS:
        ctx.error(m["starttls"], f"unknown protocol {starttls!r} (allowed: {', '.join(STARTTLS)})")
        starttls = None
    warning = ctx.get(m, "warning_days", _days, -1.0)
    critical = ctx.get(m, "critical_days", _days, -1.0)
    return MonitorEndpoint(
        name=ctx.get(m, "name", _word, text),
        endpoint=Endpoint(host, port, sni),
        starttls=starttls,
        warning_days=None if warning < 0 else warning,
        critical_days=None if critical < 0 else critical,
        trust_roots=_roots(ctx, m, v),
    )


def _staging(ctx: _Ctx, v: _V, state_dir: Path) -> Staging | None:
    m = ctx.mapping(v, {"ca", "state_dir", "on_unreachable", "remember_for"}, {"ca"})
    ca = _ca(ctx, m["ca"]) if "ca" in m else None
    folder = ctx.get(m, "state_dir", _abs_path, state_dir / "staging")
    if folder == state_dir:
        ctx.error(m["state_dir"], "must differ from the production state_dir")
    policy = Unreachable.FAIL
    if "on_unreachable" in m:
        try:
            policy = Unreachable(m["on_unreachable"].value)
        except ValueError:
            allowed = ", ".join(u.value for u in Unreachable)
            ctx.error(m["on_unreachable"], f"expected one of {allowed}")
    remember = ctx.get(m, "remember_for", _duration, Staging.remember_for)
    return None if ca is None else Staging(ca, folder, policy, remember)


def _check_staging_targets(
    ctx: _Ctx, v: _V, certs: tuple[CertSpec, ...], have_staging: bool
) -> None:
    """Every deployed certificate is rehearsed or explicitly opted out; targets need a CA."""
    for spec in certs:
        sub = v.value[spec.name]
        entry = sub.value.get("staging") if isinstance(sub.value, dict) else None
        opted_out = entry is not None and entry.value is False
        if spec.staging is not None and not have_staging:
            ctx.error(entry or sub, "a staging target needs a top-level 'staging' CA")
        elif have_staging and spec.deploy is not None and spec.staging is None and not opted_out:
            ctx.error(
                sub,
                "a staging CA is configured, so this certificate needs a 'staging' target "
                "(or 'staging: false' to deploy it unrehearsed)",
            )


def _ca(ctx: _Ctx, v: _V) -> CASpec | None:
    keys = {"directory", "contact", "trust_roots", "eab", "timeout", "agree_tos",
            "preferred_chain"}  # fmt: skip
    m = ctx.mapping(v, keys, {"directory"})
    directory = _url(ctx, m["directory"]) if "directory" in m else None
    contact: list[str] = ctx.get(m, "contact", _contacts, [])
    roots: list[Path] = ctx.get(m, "trust_roots", _paths, [])
    for i, root in enumerate(roots):
        if not root.is_file():
            ctx.error(f"{v.path}.trust_roots[{i}]", f"no such file: {root}", m["trust_roots"].line)
    eab = _eab(ctx, m["eab"]) if "eab" in m else None
    timeout = ctx.get(m, "timeout", _between(0, _HOUR, above=True), 30.0)
    agree = ctx.get(m, "agree_tos", _bool, False)
    chain = ctx.get(m, "preferred_chain", _word, "") or None
    if directory is None:
        return None
    return CASpec(directory, tuple(contact), tuple(roots), eab, timeout, agree, chain)


def _bool(ctx: _Ctx, v: _V) -> bool | None:
    if isinstance(v.value, bool):
        return v.value
    ctx.error(v, f"expected true or false, got {_short(v.value)}")
    return None


def _secret(ctx: _Ctx, v: _V) -> str | None:
    """A secret from a file the key names (never printed); bounded, UTF-8, one value."""
    path = _abs_path(ctx, v)
    if path is None:
        return None
    try:
        secret = read_bounded(path, MAX_SECRET_BYTES).decode("utf-8").strip()
    except OSError as exc:
        ctx.error(v, f"cannot read {path}: {exc.strerror}")
    except (ValueError, UnicodeDecodeError) as exc:
        ctx.error(v, f"cannot use {path}: {exc}")
    else:
        if secret:
            return secret
        ctx.error(v, f"{path} is empty")
    return None


def _contacts(ctx: _Ctx, v: _V) -> list[str] | None:
    return _list(ctx, v, _contact)


def _paths(ctx: _Ctx, v: _V) -> list[Path] | None:
    return _list(ctx, v, _abs_path)


def _contact(ctx: _Ctx, v: _V) -> str | None:
    s = _word(ctx, v)
    if s is None:
        return None
    if "@" in s and ":" not in s:
        s = f"mailto:{s}"
    if not re.fullmatch(r"mailto:[^@\s]+@[^@\s]+", s):
        ctx.error(v, f"expected an e-mail address or mailto: URI, got {s!r}")
        return None
    return s


def _eab(ctx: _Ctx, v: _V) -> Eab | None:
    m = ctx.mapping(v, {"kid", "hmac_key", "hmac_key_file"}, {"kid"})
    kid = _word(ctx, m["kid"]) if "kid" in m else None
    key: str | None = None
    if ("hmac_key" in m) == ("hmac_key_file" in m):
        ctx.error(v, "give exactly one of 'hmac_key' and 'hmac_key_file'")
    elif "hmac_key" in m:
        key = _word(ctx, m["hmac_key"])
    else:
        key = _secret(ctx, m["hmac_key_file"])
    if kid is None or key is None:
        return None
    return Eab(kid, key)


def _policy(ctx: _Ctx, v: _V) -> Policy:
    keys = {"keep_releases", "order_timeout", "max_retry_after", "failure_backoff",
            "max_backoff", "jitter"}  # fmt: skip
    m = ctx.mapping(v, keys)
    d = Policy()
    policy = Policy(
        keep_releases=ctx.get(m, "keep_releases", _count_in(1, 1000), d.keep_releases),
        order_timeout=ctx.get(m, "order_timeout", _timeout, d.order_timeout),
        max_retry_after=ctx.get(m, "max_retry_after", _between(0, _DAY), d.max_retry_after),
        failure_backoff=ctx.get(m, "failure_backoff", _between(0, 30 * _DAY), d.failure_backoff),
        max_backoff=ctx.get(m, "max_backoff", _between(0, 30 * _DAY), d.max_backoff),
        jitter=ctx.get(m, "jitter", _fraction, d.jitter),
    )
    if policy.failure_backoff > policy.max_backoff:
        ctx.error(
            m.get("failure_backoff", v),
            f"failure_backoff ({_human(policy.failure_backoff)}) is above max_backoff "
            f"({_human(policy.max_backoff)})",
        )
    return policy


def _certificates(ctx: _Ctx, v: _V) -> tuple[CertSpec, ...]:
    if not isinstance(v.value, dict) or not v.value:
        ctx.error(v, "expected a mapping of certificate names to certificates, with at least one")
        return ()
    specs: list[CertSpec] = []
    owner: dict[str, str] = {}
    for name, sub in v.value.items():
        if not _CERT_NAME.fullmatch(name):
            ctx.error(sub, "certificate name must be letters, digits, '.', '_' or '-' (max 64)")
            continue
        spec = _certificate(ctx, name, sub)
        if spec is None:
            continue
        for dns in spec.names:
            if dns in owner:
                ctx.error(
                    f"{sub.path}.names", f"{dns} is also in certificate '{owner[dns]}'", sub.line
                )
            owner.setdefault(dns, name)
        specs.append(spec)
    return tuple(specs)


def _certificate(ctx: _Ctx, name: str, v: _V) -> CertSpec | None:
    keys = {"names", "key_type", "challenge", "deploy", "staging", "profile", "reuse_key",
            "failover_instance"}  # fmt: skip
    m = ctx.mapping(v, keys, {"names", "challenge"})
    names = _names(ctx, m["names"]) if "names" in m else None
    key_type = ctx.get(m, "key_type", _key_type, KeyType.EC_P256)
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
    if isinstance(challenge, Http01Webroot | Http01Standalone):
        for dns in names:
            if dns.startswith("*."):
                ctx.error(m["names"], f"wildcard {dns} needs dns-01; http-01 cannot validate it")
    profile = ctx.get(m, "profile", _word, "") or None
    reuse = ctx.get(m, "reuse_key", _bool, False)
    instance = ctx.get(m, "failover_instance", _word, "") or None
    return CertSpec(name, names, key_type, challenge, deploy, staging, profile, reuse, instance)


def _staging_target(
    ctx: _Ctx, v: _V, deploy: DeploySpec, names: tuple[str, ...]
) -> StagingTarget | None:
    keys = {
        "dir",
        "vars",
        "test",
        "hook",
        "user",
        "endpoints",
        "verify_timeout",
        "trust_roots",
        "challenge",
        "reason",
    }
    m = ctx.mapping(v, keys, {"dir"})
    folder = _abs_path(ctx, m["dir"]) if "dir" in m else None
    waived = _unrehearsed(ctx, m, deploy, v)
    if folder is not None:
        for t in deploy.templates:
            if folder / t.dest.name == t.dest:
                ctx.error(m["dir"], f"would render over the production file {t.dest}")
    endpoints = _endpoints(ctx, m["endpoints"], names[0]) if "endpoints" in m else ()
    for e in endpoints or ():
        if e in deploy.endpoints:
            ctx.error(m["endpoints"], f"{e} is a production endpoint")
    challenge = _challenge(ctx, m["challenge"]) if "challenge" in m else None
    if folder is None:
        return None
    return StagingTarget(
        dir=folder,
        vars=_vars(ctx, m),
        test=_command(ctx, m["test"]) if "test" in m and "test" not in waived else None,
        hook=_command(ctx, m["hook"]) if "hook" in m and "hook" not in waived else None,
        user=_user(ctx, m),
        endpoints=endpoints or (),
        verify_timeout=ctx.get(m, "verify_timeout", _between(0, _HOUR, above=True), 10.0),
        trust_roots=_roots(ctx, m, v),
        challenge=challenge,
    )


def _unrehearsed(ctx: _Ctx, m: dict[str, _V], deploy: DeploySpec, v: _V) -> set[str]:
    """A production hook or config test must have a staging counterpart, or be waived
    with `hook: none` / `test: none` and a `reason`: else it is never rehearsed."""
    waived: set[str] = {k for k in ("hook", "test") if k in m and m[k].value == "none"}
    if waived and not (isinstance(m.get("reason", _V(None, "", 0)).value, str)):
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


def _deploy(ctx: _Ctx, v: _V, names: tuple[str, ...]) -> DeploySpec:
    keys = {
        "templates",
        "vars",
        "test",
        "hook",
        "user",
        "endpoints",
        "verify_timeout",
        "trust_roots",
        "min_free_mb",
        "endpoints_reason",
    }
    m = ctx.mapping(v, keys)
    templates = _templates(ctx, m["templates"]) if "templates" in m else ()
    unwatched = None
    if "endpoints" in m and m["endpoints"].value == "none":
        endpoints: tuple[Endpoint, ...] | None = ()
        unwatched = ctx.get(m, "endpoints_reason", _str, "") or None
        if unwatched is None:
            ctx.error(m["endpoints"], "endpoints: none needs an 'endpoints_reason'")
    else:
        endpoints = _endpoints(ctx, m["endpoints"], names[0]) if "endpoints" in m else None
        if endpoints == () and "endpoints" in m:
            ctx.error(
                m["endpoints"],
                "no endpoints: nothing would verify or watch what is served; list them "
                "(starttls: postgres, smtp, imap, ldap for a database or mail server), or "
                "say 'endpoints: none' with an 'endpoints_reason'",
            )
    default_endpoints = tuple(Endpoint(n, 443, n) for n in names if not n.startswith("*."))
    return DeploySpec(
        templates=templates,
        vars=_vars(ctx, m),
        test=_command(ctx, m["test"]) if "test" in m else None,
        hook=_command(ctx, m["hook"]) if "hook" in m else None,
        user=_user(ctx, m),
        endpoints=endpoints if endpoints is not None else default_endpoints,
        verify_timeout=ctx.get(m, "verify_timeout", _between(0, _HOUR, above=True), 10.0),
        trust_roots=_roots(ctx, m, v),
        min_free_bytes=ctx.get(m, "min_free_mb", _count_in(1, 1 << 24), 16) * 1024 * 1024,
        unwatched=unwatched,
    )


def _vars(ctx: _Ctx, m: dict[str, _V]) -> dict[str, Any]:
    if "vars" not in m:
        return {}
    if not isinstance(m["vars"].value, dict):
        ctx.error(m["vars"], f"expected a mapping, got {_kind(m['vars'].value)}")
        return {}
    return {k: _plain(x) for k, x in m["vars"].value.items()}


def _roots(ctx: _Ctx, m: dict[str, _V], v: _V) -> tuple[Path, ...]:
    roots: list[Path] = ctx.get(m, "trust_roots", _paths, [])
    for i, root in enumerate(roots):
        if not root.is_file():
            ctx.error(f"{v.path}.trust_roots[{i}]", f"no such file: {root}", m["trust_roots"].line)
    return tuple(roots)


def _group(ctx: _Ctx, v: _V) -> int | None:
    """A group on this machine (name or gid) whose members may read the state."""
    import grp

    raw = v.value
    try:
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**32:
            return grp.getgrgid(raw).gr_gid
        name = _word(ctx, v)
        return None if name is None else grp.getgrnam(name).gr_gid
    except KeyError:
        ctx.error(v, f"no such group {raw!r} on this machine")
        return None


def _user(ctx: _Ctx, m: dict[str, _V]) -> str | None:
    user = ctx.get(m, "user", _word, "")
    if user:
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            ctx.error(m["user"], f"no such user {user!r} on this machine")
    return user or None


def _plain(v: _V) -> Any:
    """A YAML value without positions, for template variables."""
    if isinstance(v.value, dict):
        return {k: _plain(x) for k, x in v.value.items()}
    if isinstance(v.value, list):
        return [_plain(x) for x in v.value]
    return v.value


def _templates(ctx: _Ctx, v: _V) -> tuple[TemplateSpec, ...]:
    if not isinstance(v.value, list):
        ctx.error(v, f"expected a list of {{template, dest}}, got {_kind(v.value)}")
        return ()
    out, seen = [], set()
    for item in v.value:
        m = ctx.mapping(item, {"template", "dest"}, {"template", "dest"})
        template = _word(ctx, m["template"]) if "template" in m else None
        dest = _abs_path(ctx, m["dest"]) if "dest" in m else None
        if template is None or dest is None:
            continue
        if template.startswith("/") or ".." in Path(template).parts:
            ctx.error(m["template"], "must be relative to the template directories")
            continue
        if dest.name in seen:
            ctx.error(m["dest"], f"another template already renders a file named {dest.name}")
            continue
        seen.add(dest.name)
        out.append(TemplateSpec(template, dest))
    return tuple(out)


def _command(ctx: _Ctx, v: _V) -> Command | None:
    """A list is argv; a mapping gives argv or (explicitly) a shell string, and a timeout."""
    if isinstance(v.value, list):
        argv = _list(ctx, v, _str)
        if not argv:
            ctx.error(v, "expected a non-empty list of arguments")
            return None
        return Command(tuple(argv))
    if not isinstance(v.value, dict):
        ctx.error(
            v,
            f"expected a list of arguments, or a mapping with 'argv' or 'shell', "
            f"got {_kind(v.value)}",
        )
        return None
    m = ctx.mapping(v, {"argv", "shell", "timeout", "env"})
    timeout = ctx.get(m, "timeout", _timeout, 60.0)
    env = _env(ctx, m["env"]) if "env" in m else ()
    if ("argv" in m) == ("shell" in m):
        ctx.error(v, "give exactly one of 'argv' (a list) and 'shell' (a string run by /bin/sh)")
        return None
    if "shell" in m:
        script = _str(ctx, m["shell"])
        return None if script is None else Command(("/bin/sh", "-c", script), timeout, True, env)
    argv = _list(ctx, m["argv"], _str)
    if not argv:
        ctx.error(m["argv"], "expected a non-empty list of arguments")
        return None
    return Command(tuple(argv), timeout, False, env)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _env(ctx: _Ctx, v: _V) -> tuple[tuple[str, str], ...]:
    """Extra environment for a hook: NAME: value (scalars become strings). The names
    certagent sets itself (CERTAGENT_*, RENEWED_*, LEGO_*) cannot be overridden."""
    if not isinstance(v.value, dict):
        ctx.error(v, f"expected a mapping of NAME: value, got {_kind(v.value)}")
        return ()
    out = []
    for name, sub in v.value.items():
        if not _ENV_NAME.fullmatch(name):
            ctx.error(sub, f"not an environment variable name: {name!r}")
        elif name.startswith(("CERTAGENT_", "RENEWED_", "LEGO_")):
            ctx.error(sub, f"{name} is set by certagent itself")
        elif isinstance(sub.value, bool) or not isinstance(sub.value, str | int | float):
            ctx.error(sub, f"expected a string or number, got {_kind(sub.value)}")
        elif "\0" in str(sub.value):
            ctx.error(sub, "a NUL byte cannot be in an environment variable")
        else:
            out.append((name, str(sub.value)))
    return tuple(out)


def _endpoints(ctx: _Ctx, v: _V, default_sni: str) -> tuple[Endpoint, ...] | None:
    if not isinstance(v.value, list):
        ctx.error(v, f"expected a list of host:port or {{address, sni}}, got {_kind(v.value)}")
        return None
    out = []
    for item in v.value:
        sni = default_sni
        target = item
        starttls = None
        if isinstance(item.value, dict):
            m = ctx.mapping(item, {"address", "sni", "starttls"}, {"address"})
            sni = ctx.get(m, "sni", _word, default_sni)
            starttls = ctx.get(m, "starttls", _word, "") or None
            if starttls is not None and starttls not in STARTTLS:
                allowed = ", ".join(STARTTLS)
                ctx.error(m["starttls"], f"unknown protocol {starttls!r} (allowed: {allowed})")
                starttls = None
            if "address" not in m:
                continue
            target = m["address"]
        parsed = _host_port(ctx, target)
        if parsed is not None:
            out.append(Endpoint(parsed[0], parsed[1], sni, starttls))
    return tuple(out)


def _host_port(ctx: _Ctx, v: _V) -> tuple[str, int] | None:
    """host:port, IPv6 as [addr]:port."""
    text = _word(ctx, v)
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})", text or "")
    if not match or not 0 < int(match.group(2)) < 65536:
        if text is not None:
            ctx.error(v, f"expected host:port (IPv6 as [addr]:port), got {text!r}")
        return None
    return match.group(1).strip("[]"), int(match.group(2))


def _names(ctx: _Ctx, v: _V) -> tuple[str, ...] | None:
    """The valid, lower-cased names; bad ones are reported and left out so checks go on."""
    raw = _list(ctx, v, _word)
    if raw is None:
        return None
    if not raw:
        ctx.error(v, "the list of names is empty")
        return None
    seen: list[str] = []
    for i, name in enumerate(raw):
        dns = name.lower().rstrip(".")
        if not _is_dns_name(dns):
            ctx.error(f"{v.path}[{i}]", f"not a valid DNS name: {name!r}", v.line)
        elif dns in seen:
            ctx.error(f"{v.path}[{i}]", f"duplicate name {dns}", v.line)
        else:
            seen.append(dns)
    return tuple(seen) or None


def _is_dns_name(name: str) -> bool:
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    return len(name) <= 253 and len(labels) >= 1 and all(_LABEL.fullmatch(x) for x in labels)


def _key_type(ctx: _Ctx, v: _V) -> KeyType | None:
    try:
        return KeyType(v.value)
    except ValueError:
        allowed = ", ".join(k.value for k in KeyType)
        ctx.error(v, f"unknown key type {v.value!r} (allowed: {allowed})")
        return None


def _challenge(ctx: _Ctx, v: _V) -> ChallengeSpec | None:
    m = ctx.mapping(v, {"type", "webroot", "standalone"}, {"type"})
    kind = _word(ctx, m["type"]) if "type" in m else None
    if kind is None:
        return None
    if kind != "http-01":
        ctx.error(m["type"], f"unknown challenge type {kind!r} (allowed: http-01)")
        return None
    if ("webroot" in m) == ("standalone" in m):
        ctx.error(v, "http-01 needs exactly one of 'webroot' and 'standalone'")
        return None
    if "webroot" in m:
        root = _abs_path(ctx, m["webroot"])
        return None if root is None else Http01Webroot(root)
    sm = ctx.mapping(m["standalone"], {"address", "port"}, {"port"})
    address = ctx.get(sm, "address", _word, "0.0.0.0")  # noqa: S104 - ACME validators come from anywhere
    port = _port(ctx, sm["port"]) if "port" in sm else None
    return None if port is None else Http01Standalone(address, port)


def from_environment(explicit: str | None) -> Config:
    """Load the configuration that the command line and environment point at."""
    return load(default_path(explicit, dict(os.environ)))
