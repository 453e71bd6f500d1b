"""The value tree, the checker, and the scalar kinds (text, paths, durations, numbers,
choices)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import ConfigProblem

T = TypeVar("T")

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_DAYS = 3650
MAX_SECRET_BYTES = 64 * 1024  # password and HMAC key files
STARTTLS = ("smtp", "imap", "postgres", "ldap")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
UNSET: Any = object()  # "no default given" (None is a default)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Value:
    """A YAML value with its key path and line, for error messages."""

    value: Any
    path: str
    line: int
    file: str | None = None  # a part of the configuration (certificates_dir), not the main file


@dataclass
class Checker:
    """Collects problems; reads mappings by their description."""

    source: Path
    problems: list[ConfigProblem] = field(default_factory=list)
    # what a value shared by many certificates (a `defaults` one) was converted to,
    # by id, with the value itself (an id is only reused once its value is gone)
    shared: dict[int, tuple[Value, Any]] = field(default_factory=dict)

    def error(self, at: Value | str, message: str, line: int | None = None) -> None:
        if isinstance(at, Value):
            self.problems.append(ConfigProblem(at.path, message, at.line, at.file))
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
