"""The kinds of value a configuration key can hold, each described once.

A kind converts a YAML value (reporting problems with the key path and line), and says
what it accepts: as a JSON Schema fragment and as the words of the reference tables.
`configspec` builds the description of every key from these; `config` validates with
that description, so the loader, `docs/configuration.md` and
`certagent/schemas/config.schema.json` cannot disagree (tests/test_configspec.py).

Pure: no YAML here (`config` owns the parser); `SecretFile` reads the file it names.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import ConfigProblem

T = TypeVar("T")

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_DAYS = 3650
MAX_SECRET_BYTES = 64 * 1024  # password and HMAC key files
STARTTLS = ("smtp", "imap", "postgres", "ldap")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ONE_LINE = r"^[^\x00-\x1f\x7f]+$"
_UNSET: Any = object()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Value:
    """A YAML value with its key path and line, for error messages."""

    value: Any
    path: str
    line: int


@dataclass
class Checker:
    """Collects problems; reads mappings by their description."""

    source: Path
    problems: list[ConfigProblem] = field(default_factory=list)

    def error(self, at: Value | str, message: str, line: int | None = None) -> None:
        if isinstance(at, Value):
            self.problems.append(ConfigProblem(at.path, message, at.line))
        else:
            self.problems.append(ConfigProblem(at, message, line))


class Kind(Generic[T]):
    """What a key holds. `text` is the type column of the reference tables."""

    text = ""

    def convert(self, ctx: Checker, v: Value) -> T | None:
        raise NotImplementedError

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def human(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def is_dns_name(name: str) -> bool:
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    return len(name) <= 253 and len(labels) >= 1 and all(_LABEL.fullmatch(x) for x in labels)


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing more than `limit` (so /dev/zero cannot hang us)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


# -- scalars ------------------------------------------------------------------------


class Text(Kind[str]):
    text = "string"

    def convert(self, ctx: Checker, v: Value) -> str | None:
        if isinstance(v.value, str) and v.value.strip() and "\0" not in v.value:
            return v.value
        what = "a string with a NUL byte" if isinstance(v.value, str) and v.value else None
        ctx.error(v, f"expected a non-empty string, got {what or kind_of(v.value)}")
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^[^\x00]*[^\x00\s][^\x00]*$"}


class Word(Text):
    """A string on one line (a name, a host, a user): no control characters at all."""

    def __init__(self, text: str = "string") -> None:
        self.text = text

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = super().convert(ctx, v)
        if s is not None and _CONTROL.search(s):
            ctx.error(v, f"expected one line without control characters, got {s!r}")
            return None
        return s

    def schema(self) -> dict[str, Any]:
        return {
            "type": "string",
            "pattern": r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]*$",
        }


class AbsPath(Kind[Path]):
    text = "absolute path"

    def convert(self, ctx: Checker, v: Value) -> Path | None:
        s = Word().convert(ctx, v)
        if s is None:
            return None
        if not s.startswith("/"):
            ctx.error(v, f"expected an absolute path, got {s!r}")
            return None
        return Path(s)

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^/[^\x00-\x1f\x7f]*$"}


class RelPath(Word):
    """A path relative to a search path: not absolute, no `..`."""

    _RE = r"(?!/)(?!(.*/)?\.\.(/|$))[^\x00-\x1f\x7f]+"

    def __init__(self) -> None:
        super().__init__("relative path")

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = super().convert(ctx, v)
        if s is not None and (s.startswith("/") or ".." in Path(s).parts):
            ctx.error(v, "must be relative to the template directories")
            return None
        return s

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self._RE}$"}


class Url(Kind[str]):
    text = "http(s) URL"
    _RE = r"https?://[^/\s]+(/\S*)?"

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = Word().convert(ctx, v)
        if s is not None and not re.fullmatch(self._RE, s):
            ctx.error(v, f"expected an http(s) URL, got {s!r}")
            return None
        return s

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self._RE}$"}


def seconds_of(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw) if abs(raw) < 1e300 else math.inf
    elif isinstance(raw, str) and (m := _DURATION.fullmatch(raw.strip())):
        value = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class Duration(Kind[float]):
    """Seconds, or a number with a unit (ms, s, m, h, d), bounded to [lo, hi] (or
    (lo, hi] when `above`)."""

    def __init__(self, lo: float, hi: float, *, above: bool = False) -> None:
        self.lo, self.hi, self.above = lo, hi, above
        self.text = (
            f"duration, above {human(lo)} up to {human(hi)}"
            if above
            else f"duration, {human(lo)} to {human(hi)}"
        )

    def convert(self, ctx: Checker, v: Value) -> float | None:
        seconds = seconds_of(v.value)
        if seconds is None:
            ctx.error(v, f"expected a duration like 30, '90s', '5m', '2h' or '1d', got {v.value!r}")
            return None
        if not (self.lo < seconds if self.above else self.lo <= seconds) or seconds > self.hi:
            low = f"above {human(self.lo)}" if self.above else f"at least {human(self.lo)}"
            ctx.error(v, f"expected a duration {low} and at most {human(self.hi)}, got {v.value!r}")
            return None
        return seconds

    def schema(self) -> dict[str, Any]:
        bound = "exclusiveMinimum" if self.above else "minimum"
        number = {"type": "number", bound: self.lo, "maximum": self.hi}
        text = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"}
        return {"anyOf": [number, text], "description": f"{self.text} (the bounds hold in "
                "any unit)"}  # fmt: skip


DURATION = Duration(0, 366 * DAY)  # how long something is kept or waited for
TIMEOUT = Duration(0, DAY, above=True)  # a network or process deadline
NET_TIMEOUT = Duration(0, HOUR, above=True)


class Number(Kind[float]):
    """A plain number in [lo, hi] (or [lo, hi) when `below`)."""

    def __init__(self, lo: float, hi: float, text: str, *, below: bool = False) -> None:
        self.lo, self.hi, self.below, self.text = lo, hi, below, text

    def convert(self, ctx: Checker, v: Value) -> float | None:
        x = v.value
        ok = isinstance(x, int | float) and not isinstance(x, bool)
        if ok and self.lo <= x and (x < self.hi if self.below else x <= self.hi):
            return float(x)
        upto = f"up to (not including) {self.hi:g}" if self.below else f"to {self.hi:g}"
        ctx.error(v, f"expected {self.text} from {self.lo:g} {upto}, got {short(x)}")
        return None

    def schema(self) -> dict[str, Any]:
        top = "exclusiveMaximum" if self.below else "maximum"
        return {"type": "number", "minimum": self.lo, top: self.hi}


DAYS = Number(0, MAX_DAYS, "a number of days")
FRACTION = Number(0, 1, "a number", below=True)


class Count(Kind[int]):
    def __init__(self, lo: int, hi: int, text: str = "", noun: str = "") -> None:
        self.lo, self.hi, self.noun = lo, hi, noun
        self.text = text or f"integer {lo} to {hi}"

    def convert(self, ctx: Checker, v: Value) -> int | None:
        x = v.value
        if isinstance(x, int) and not isinstance(x, bool) and self.lo <= x <= self.hi:
            return x
        if self.noun:
            ctx.error(v, f"expected {self.noun} {self.lo}-{self.hi}, got {short(x)}")
        else:
            ctx.error(v, f"expected a whole number from {self.lo} to {self.hi}, got {short(x)}")
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


PORT = Count(1, 65535, "port 1 to 65535", "a port number")


class Bool(Kind[bool]):
    text = "boolean"

    def convert(self, ctx: Checker, v: Value) -> bool | None:
        if isinstance(v.value, bool):
            return v.value
        ctx.error(v, f"expected true or false, got {short(v.value)}")
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Choice(Kind[str]):
    def __init__(self, *values: str, what: str = "") -> None:
        self.values, self.what = values, what
        self.text = ", ".join(f"`{x}`" for x in values)

    def convert(self, ctx: Checker, v: Value) -> str | None:
        if isinstance(v.value, str) and v.value in self.values:
            return v.value
        if self.what:
            ctx.error(v, f"unknown {self.what} {v.value!r} (allowed: {', '.join(self.values)})")
        else:
            ctx.error(v, f"expected one of {', '.join(self.values)}, got {short(v.value)}")
        return None

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.values)}


class Pattern(Word):
    """A word matching a regular expression (an instance name, a profile)."""

    def __init__(self, regex: str, text: str, what: str) -> None:
        super().__init__(text)
        self.regex, self.what = regex, what

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = super().convert(ctx, v)
        if s is not None and not re.fullmatch(self.regex, s):
            ctx.error(v, f"not {self.what}: {s!r}")
            return None
        return s

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self.regex}$"}


VRRP_NAME = Pattern(
    r"[A-Za-z0-9_]{1,63}", "`[A-Za-z0-9_]` name", "a keepalived instance name ([A-Za-z0-9_])"
)


_HOST = (
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class Address(Kind[str]):
    """An IP address or a host name (not a wildcard), normalised."""

    text = "IP or host name"

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = Word().convert(ctx, v)
        if s is None:
            return None
        try:
            return str(ipaddress.ip_address(s.strip("[]")))
        except ValueError:
            if is_dns_name(s.lower()) and not s.startswith("*"):
                return s.lower()
        ctx.error(v, f"expected an IP address or host name, got {s!r}")
        return None

    def schema(self) -> dict[str, Any]:
        ip = {"type": "string", "pattern": r"^\[?[0-9A-Fa-f:.]+\]?$"}  # the loader parses it
        return {"anyOf": [ip, {"type": "string", "pattern": f"^{_HOST}$", "maxLength": 253}]}


class Interface(Kind[str]):
    """An address (address/prefix allowed; the prefix is dropped)."""

    text = "address"

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = Word().convert(ctx, v)
        if s is None:
            return None
        try:
            return str(ipaddress.ip_interface(s)).split("/")[0]
        except ValueError:
            ctx.error(v, f"expected an IP address (address or address/prefix), got {s!r}")
            return None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^[0-9A-Fa-f.:]+(/\d{1,3})?$"}


class Contact(Kind[str]):
    text = "e-mail address or `mailto:` URI"

    def convert(self, ctx: Checker, v: Value) -> str | None:
        s = Word().convert(ctx, v)
        if s is None:
            return None
        if "@" in s and ":" not in s:
            s = f"mailto:{s}"
        if not re.fullmatch(r"mailto:[^@\s]+@[^@\s]+", s):
            ctx.error(v, f"expected an e-mail address or mailto: URI, got {s!r}")
            return None
        return s

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^(mailto:)?[^@\s:]+@[^@\s]+$"}


class HostPort(Kind[tuple[str, int]]):
    """host:port, IPv6 as [addr]:port."""

    text = "`host:port` (IPv6 as `[addr]:port`)"
    _RE = r"(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})"

    def convert(self, ctx: Checker, v: Value) -> tuple[str, int] | None:
        text = Word().convert(ctx, v)
        match = re.fullmatch(self._RE, text or "")
        if not match or not 0 < int(match.group(2)) < 65536:
            if text is not None:
                ctx.error(v, f"expected host:port (IPv6 as [addr]:port), got {text!r}")
            return None
        return match.group(1).strip("[]"), int(match.group(2))

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self._RE}$"}


class SecretFile(AbsPath):
    """A secret read from the file the key names (never printed); bounded, UTF-8."""

    text = "absolute path of a root-only file"

    def convert(self, ctx: Checker, v: Value) -> str | None:  # type: ignore[override]
        path = super().convert(ctx, v)
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


class Group(Kind[int]):
    """A group on this machine (name or gid)."""

    text = "group name or gid"

    def convert(self, ctx: Checker, v: Value) -> int | None:
        import grp

        raw = v.value
        try:
            if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**32:
                return grp.getgrgid(raw).gr_gid
            name = Word().convert(ctx, v)
            return None if name is None else grp.getgrnam(name).gr_gid
        except KeyError:
            ctx.error(v, f"no such group {raw!r} on this machine")
            return None

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [Word().schema(), {"type": "integer", "minimum": 0}]}


class User(Word):
    """A user on this machine."""

    def __init__(self) -> None:
        super().__init__("user name")

    def convert(self, ctx: Checker, v: Value) -> str | None:
        import pwd

        user = super().convert(ctx, v)
        if user is None:
            return None
        try:
            pwd.getpwnam(user)
        except KeyError:
            ctx.error(v, f"no such user {user!r} on this machine")
            return None
        return user


class Literal(Kind[str]):
    """One word that stands for a choice (`none`, `auto`)."""

    def __init__(self, word: str) -> None:
        self.word, self.text = word, f"`{word}`"

    def convert(self, ctx: Checker, v: Value) -> str | None:
        if v.value == self.word:
            return self.word
        ctx.error(v, f"expected {self.word!r}, got {short(v.value)}")
        return None

    def schema(self) -> dict[str, Any]:
        return {"const": self.word}


class Either(Kind[Any]):
    """One of a literal word (or `false`) and another kind: `auto` or a path,
    `none` or a command, `false` or a staging target."""

    def __init__(self, first: Any, other: Kind[Any], text: str = "") -> None:
        self.first, self.other = first, other
        word = "`false`" if first is False else f"`{first}`"
        self.text = text or f"{other.text}, or {word}"

    def convert(self, ctx: Checker, v: Value) -> Any:
        if v.value == self.first and type(v.value) is type(self.first):
            return self.first
        return self.other.convert(ctx, v)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"const": self.first}, self.other.schema()]}


# -- collections --------------------------------------------------------------------


class ListOf(Kind[list[T]]):
    def __init__(
        self, item: Kind[T], text: str = "", *, nonempty: bool = False, empty: str = ""
    ) -> None:
        self.item, self.nonempty = item, nonempty
        self.empty = empty or "expected a non-empty list"
        self.text = text or f"{'non-empty ' if nonempty else ''}list of {item.text}"

    def convert(self, ctx: Checker, v: Value) -> list[T] | None:
        if not isinstance(v.value, list):
            ctx.error(v, f"expected a list, got {kind_of(v.value)}")
            return None
        if self.nonempty and not v.value:
            ctx.error(v, self.empty)
            return None
        out = [self.item.convert(ctx, item) for item in v.value]
        return [x for x in out if x is not None]

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": self.item.schema()}
        if self.nonempty:
            out["minItems"] = 1
        return out


ARGV = ListOf(Text(), "list of arguments", nonempty=True)
PATHS = ListOf(AbsPath(), "list of absolute paths")


class Names(Kind[tuple[str, ...]]):
    """DNS names, lower-cased; bad ones are reported and left out so checks go on."""

    text = "non-empty list of DNS names"

    def convert(self, ctx: Checker, v: Value) -> tuple[str, ...] | None:
        raw = ListOf(Word()).convert(ctx, v)
        if raw is None:
            return None
        if not raw:
            ctx.error(v, "the list of names is empty")
            return None
        seen: list[str] = []
        for i, name in enumerate(raw):
            dns = name.lower().rstrip(".")
            if not is_dns_name(dns):
                ctx.error(f"{v.path}[{i}]", f"not a valid DNS name: {name!r}", v.line)
            elif dns in seen:
                ctx.error(f"{v.path}[{i}]", f"duplicate name {dns}", v.line)
            else:
                seen.append(dns)
        return tuple(seen) or None

    def schema(self) -> dict[str, Any]:
        name = {"type": "string", "pattern": r"^(\*\.)?[A-Za-z0-9.-]{1,253}$"}
        return {"type": "array", "items": name, "minItems": 1, "uniqueItems": True}


class Free(Kind[dict[str, Any]]):
    """A free-form mapping (template variables)."""

    text = "mapping"

    def convert(self, ctx: Checker, v: Value) -> dict[str, Any] | None:
        if not isinstance(v.value, dict):
            ctx.error(v, f"expected a mapping, got {kind_of(v.value)}")
            return None
        return {k: plain(x) for k, x in v.value.items()}

    def schema(self) -> dict[str, Any]:
        return {"type": "object"}


def plain(v: Value) -> Any:
    """A YAML value without positions."""
    if isinstance(v.value, dict):
        return {k: plain(x) for k, x in v.value.items()}
    if isinstance(v.value, list):
        return [plain(x) for x in v.value]
    return v.value


_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
_OWN_ENV = ("CERTAGENT_", "RENEWED_", "LEGO_")


class Env(Kind[tuple[tuple[str, str], ...]]):
    """Extra environment for a hook: NAME: value (scalars become strings). The names
    certagent sets itself (CERTAGENT_*, RENEWED_*, LEGO_*) cannot be overridden."""

    text = "mapping `NAME: value`"

    def convert(self, ctx: Checker, v: Value) -> tuple[tuple[str, str], ...] | None:
        if not isinstance(v.value, dict):
            ctx.error(v, f"expected a mapping of NAME: value, got {kind_of(v.value)}")
            return None
        out = []
        for name, sub in v.value.items():
            if not re.fullmatch(_ENV_NAME, name):
                ctx.error(sub, f"not an environment variable name: {name!r}")
            elif name.startswith(_OWN_ENV):
                ctx.error(sub, f"{name} is set by certagent itself")
            elif isinstance(sub.value, bool) or not isinstance(sub.value, str | int | float):
                ctx.error(sub, f"expected a string or number, got {kind_of(sub.value)}")
            elif "\0" in str(sub.value):
                ctx.error(sub, "a NUL byte cannot be in an environment variable")
            else:
                out.append((name, str(sub.value)))
        return tuple(out)

    def schema(self) -> dict[str, Any]:
        value = {"type": ["string", "number"]}
        return {
            "type": "object",
            "propertyNames": {
                "pattern": f"^{_ENV_NAME}$",
                "not": {"pattern": f"^({'|'.join(_OWN_ENV)})"},
            },
            "additionalProperties": value,
        }


@dataclass(frozen=True)
class Key:
    """One key: its kind, default, whether it is required, and what it means."""

    name: str
    kind: Kind[Any]
    default: Any = None  # used when the key is absent (None: the code decides)
    doc: str = ""
    required: bool = False
    default_doc: str = ""  # the default column, when `default` does not say it


class Fields(dict[str, Value]):
    """A section's known keys, with the values already converted."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.done: dict[str, Any] = {}


def _plain_kind(kind: Kind[Any]) -> bool:
    """Converted when its section is read: not a section the loader reads itself."""
    if isinstance(kind, Either):
        kind = kind.other
    if isinstance(kind, ListOf):
        kind = kind.item
    return not isinstance(kind, Section | MapOf)


class Section(Kind[dict[str, Value]]):
    """A mapping with fixed keys. `read` checks the keys; `get` converts one of them,
    with the description's kind and default."""

    def __init__(self, *keys: Key, text: str = "mapping", title: str = "", doc: str = "",
                 one_of: tuple[tuple[str, ...], ...] = ()) -> None:  # fmt: skip
        self.keys = {k.name: k for k in keys}
        self.text, self.title, self.doc, self.one_of = text, title, doc, one_of

    def __getitem__(self, name: str) -> Key:
        return self.keys[name]

    def convert(self, ctx: Checker, v: Value) -> dict[str, Value] | None:
        return self.read(ctx, v)

    def read(self, ctx: Checker, v: Value) -> Fields:
        """The known keys of a mapping. Unknown and missing keys are reported, and so is
        every value of a plain kind (whatever the loader goes on to use), so all the
        problems of a section are said at once."""
        if not isinstance(v.value, dict):
            ctx.error(v, f"expected a mapping, got {kind_of(v.value)}")
            return Fields()
        allowed = self.keys.keys()
        for key, sub in v.value.items():
            if key not in allowed:
                ctx.error(sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(k.name for k in self.keys.values() if k.required):
            if key not in v.value:
                ctx.error(v, f"missing required key '{key}'")
        fields = Fields({k: s for k, s in v.value.items() if k in allowed})
        for name, sub in fields.items():
            kind = self.keys[name].kind
            if _plain_kind(kind):
                fields.done[name] = kind.convert(ctx, sub)
        return fields

    def get(self, ctx: Checker, m: Mapping[str, Value], name: str, default: Any = _UNSET) -> Any:
        """The value of a key: converted by its kind, or the default when absent or
        invalid (the problem is reported once)."""
        key = self.keys[name]  # a KeyError here is a loader bug (tests walk every key)
        fallback = key.default if default is _UNSET else default
        if name not in m:
            return fallback
        if isinstance(m, Fields) and name in m.done:
            result = m.done[name]
        else:
            result = key.kind.convert(ctx, m[name])
        return fallback if result is None else result

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "properties": {k.name: _described(k) for k in self.keys.values()},
            "additionalProperties": False,
        }
        required = [k.name for k in self.keys.values() if k.required]
        if required:
            out["required"] = required
        if self.one_of:
            out["oneOf"] = [{"required": list(group)} for group in self.one_of]
        return out


class MapOf(Kind[dict[str, Value]]):
    """A mapping of names (matching `names`) to items of one kind."""

    def __init__(self, names: str, item: Kind[Any], text: str, *, nonempty: bool = False,
                 what: str = "names", bad: str = "not a valid name here") -> None:  # fmt: skip
        self.names, self.item, self.text, self.nonempty, self.what, self.bad = (
            names, item, text, nonempty, what, bad)  # fmt: skip

    def convert(self, ctx: Checker, v: Value) -> dict[str, Value] | None:
        if not isinstance(v.value, dict) or (self.nonempty and not v.value):
            least = ", with at least one" if self.nonempty else ""
            ctx.error(v, f"expected a mapping of {self.what}{least}, got {kind_of(v.value)}")
            return None
        out = {}
        for name, sub in v.value.items():
            if re.fullmatch(self.names, name):
                out[name] = sub
            else:
                ctx.error(sub, f"{self.bad}: {name!r}")
        return out

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "propertyNames": {"pattern": f"^{self.names}$"},
            "additionalProperties": self.item.schema(),
        }
        if self.nonempty:
            out["minProperties"] = 1
        return out


def _described(key: Key) -> dict[str, Any]:
    out = dict(key.kind.schema())
    if key.doc:
        out["description"] = key.doc if "description" not in out else (
            f"{key.doc} ({out['description']})")  # fmt: skip
    if key.default is not None and not isinstance(key.default, Path | tuple):
        out["default"] = key.default
    elif isinstance(key.default, Path):
        out["default"] = str(key.default)
    return out
