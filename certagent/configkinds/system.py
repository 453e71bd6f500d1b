"""Kinds that name something on the network or this machine: addresses, interfaces,
contacts, host:port, secret files, groups and users."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .base import MAX_SECRET_BYTES, AbsPath, Checker, Kind, Value, Word, is_dns_name, read_bounded

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
