"""Kinds that hold other values: lists, name lists, free mappings, environments,
sections of described keys, and mappings of names to sections."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .base import UNSET, AbsPath, Checker, Either, Kind, T, Text, Value, Word, is_dns_name, kind_of

# -- collections --------------------------------------------------------------------


D = TypeVar("D")  # a dataclass a Section builds


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


class OneOrList(Kind[list[Value]]):
    """One mapping of a section, or a list of them in order of preference (`ca`): the
    mappings, each still to be read by the section."""

    def __init__(self, item: Section, most: int, text: str = "") -> None:
        self.other, self.most = item, most
        self.text = text or f"{item.text}, or a list of up to {most} of them"

    def convert(self, ctx: Checker, v: Value) -> list[Value] | None:
        if isinstance(v.value, dict):
            return [v]
        if not isinstance(v.value, list) or not v.value:
            ctx.error(v, f"expected a mapping or a non-empty list of them, got {kind_of(v.value)}")
            return None
        if len(v.value) > self.most:
            ctx.error(v, f"at most {self.most}, got {len(v.value)}")
            return None
        out = []
        for item in v.value:
            if isinstance(item.value, dict):
                out.append(item)
            else:
                ctx.error(item, f"expected a mapping, got {kind_of(item.value)}")
        return out

    def schema(self) -> dict[str, Any]:
        one = self.other.schema()
        return {"anyOf": [one, {"type": "array", "minItems": 1, "maxItems": self.most,
                                "items": one}]}  # fmt: skip


ARGV = ListOf(Text(), "list of arguments", nonempty=True)
PATHS = ListOf(AbsPath(), "list of absolute paths")


class Names(Kind[tuple[str, ...]]):
    """DNS names, lower-cased, and IP addresses (RFC 8738), canonical; bad ones are
    reported and left out so checks go on."""

    text = "non-empty list of DNS names and IP addresses"

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
            ip = ip_name(name)
            if ip is not None:  # an IP identifier (RFC 8738), in its canonical form
                dns = ip
            elif _numeric_tld(dns):  # never sent to a CA as a DNS name it would refuse
                ctx.error(f"{v.path}[{i}]", f"{name!r} ends in an all-numeric label: neither "
                          "a DNS name nor an IP address", v.line)  # fmt: skip
                continue
            if ip is None and not is_dns_name(dns):
                ctx.error(f"{v.path}[{i}]", f"not a valid DNS name: {name!r}", v.line)
            elif dns in seen:
                ctx.error(f"{v.path}[{i}]", f"duplicate name {dns}", v.line)
            else:
                seen.append(dns)
        return tuple(seen) or None

    def schema(self) -> dict[str, Any]:
        # a DNS name whose last label is not all digits, or an IP address
        dns = {"type": "string", "pattern": r"^(?=(\*\.)?[A-Za-z0-9.-]{1,253}$)"
               r"(\*\.)?([A-Za-z0-9-]*\.)*[A-Za-z0-9-]*[A-Za-z-][A-Za-z0-9-]*\.?$"}  # fmt: skip
        name = {"anyOf": [dns, {"type": "string", "format": "ipv4"},
                          {"type": "string", "format": "ipv6"}]}  # fmt: skip
        return {"type": "array", "items": name, "minItems": 1, "uniqueItems": True}


def ip_name(name: str) -> str | None:
    """An IP address in its canonical text (IPv6 compressed, RFC 8738 section 3), or
    None when the name is not one."""
    import ipaddress

    text = name.strip()
    if ":" not in text and not text.replace(".", "").isdigit():
        return None  # neither IPv6 (has a colon) nor IPv4 (digits and dots): a DNS name
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _numeric_tld(name: str) -> bool:
    """A name whose last label is all digits (no TLD is: RFC 3696 section 2), which a
    CA refuses as a DNS identifier."""
    return name.rsplit(".", 1)[-1].isdigit()


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
        self._required = sorted(k.name for k in keys if k.required)
        self._plain: dict[str, bool] = {}  # key: converted when the section is read
        self._fields: dict[type, list[str]] = {}  # a dataclass's fields that are keys here

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
        for key in self._required:
            if key not in v.value:
                ctx.error(v, f"missing required key '{key}'")
        fields = Fields({k: s for k, s in v.value.items() if k in allowed})
        plain = self._plain
        for name, sub in fields.items():
            kind = self.keys[name].kind
            known = plain.get(name)
            if known is None:
                known = plain[name] = _plain_kind(kind)
            if known:
                fields.done[name] = kind.convert(ctx, sub)
        return fields

    def get(self, ctx: Checker, m: Mapping[str, Value], name: str, default: Any = UNSET) -> Any:
        """The value of a key: converted by its kind, or the default when absent or
        invalid (the problem is reported once)."""
        key = self.keys[name]  # a KeyError here is a loader bug (tests walk every key)
        fallback = key.default if default is UNSET else default
        if name not in m:
            return fallback
        if isinstance(m, Fields) and name in m.done:
            result = m.done[name]
        else:
            result = key.kind.convert(ctx, m[name])
        return fallback if result is None else result

    def build(self, ctx: Checker, m: Mapping[str, Value], cls: type[D], **computed: Any) -> D:
        """A dataclass from this section by keyword: every field named like one of the
        section's keys takes that key's value (converted, or its default); `computed`
        gives the fields the loader works out itself (cross-key rules, nested parts).
        A key renamed in the description and not in the dataclass fails loudly here."""
        names = self._fields.get(cls)
        if names is None:
            import dataclasses

            fields = dataclasses.fields(cls)  # type: ignore[arg-type]
            names = self._fields[cls] = [f.name for f in fields if f.name in self.keys]
        values = dict(computed)
        for name in names:
            if name not in values:
                values[name] = self.get(ctx, m, name)
        return cls(**values)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "object",
            "properties": {k.name: _described(k) for k in self.keys.values()},
            "additionalProperties": False,
        }
        required = [k.name for k in self.keys.values() if k.required]
        if required:
            out["required"] = required
        if self.one_of:  # an empty group: none of the others (dns-persist-01 needs no way)
            others = [{"required": [k]} for group in self.one_of for k in group]
            out["oneOf"] = [{"required": list(group)} if group else {"not": {"anyOf": others}}
                            for group in self.one_of]  # fmt: skip
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
            got = "an empty one" if v.value == {} else kind_of(v.value)
            ctx.error(v, f"expected a mapping of {self.what}{least}, got {got}")
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
