"""Kinds and constants shared by the sections: commands, endpoints, certificate names."""

from __future__ import annotations

from typing import Any

from ..configkinds import (
    ARGV,
    STARTTLS,
    TIMEOUT,
    Checker,
    Choice,
    Either,
    Env,
    HostPort,
    Key,
    Kind,
    ListOf,
    OneOrList,
    Section,
    Text,
    Value,
    Word,
    kind_of,
)
from ..model import Command

CERT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ROOTS_DOC = "roots added to the system store for verification (a private CA's root)"


class CommandKind(Kind[Command]):
    """A list is argv; a mapping gives argv or (explicitly) a shell string, a timeout
    and extra environment."""

    text = "command"
    MAPPING = Section(
        Key("argv", ARGV, doc="the program and its arguments, run without a shell"),
        Key("shell", Text(), doc="a script run by `/bin/sh -c`, only when a shell is wanted"),
        Key("timeout", TIMEOUT, 60.0, "killed (its process group) after this"),
        Key(
            "env",
            Env(),
            doc="extra environment; the `CERTAGENT_*`, `RENEWED_*` and "
            "`LEGO_*` variables certagent sets cannot be overridden",
        ),
        one_of=(("argv",), ("shell",)),
    )

    def convert(self, ctx: Checker, v: Value) -> Command | None:
        if isinstance(v.value, list):
            argv = ARGV.convert(ctx, v)
            return Command(tuple(argv)) if argv else None
        if not isinstance(v.value, dict):
            ctx.error(
                v,
                f"expected a list of arguments, or a mapping with 'argv' or 'shell', "
                f"got {kind_of(v.value)}",
            )
            return None
        spec = self.MAPPING
        m = spec.read(ctx, v)
        timeout = spec.get(ctx, m, "timeout")
        env = spec.get(ctx, m, "env", ())
        if ("argv" in m) == ("shell" in m):
            ctx.error(
                v, "give exactly one of 'argv' (a list) and 'shell' (a string run by /bin/sh)"
            )
            return None
        if "shell" in m:
            script = spec.get(ctx, m, "shell")
            return (
                None if script is None else Command(("/bin/sh", "-c", script), timeout, True, env)
            )
        argv = spec.get(ctx, m, "argv")
        return Command(tuple(argv), timeout, False, env) if argv else None

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [ARGV.schema(), self.MAPPING.schema()]}


COMMAND = CommandKind()

ENDPOINT = Section(
    Key("address", HostPort(), doc="where to connect", required=True),
    Key(
        "sni",
        Word("DNS name"),
        doc="the server name sent and verified",
        default_doc="the first name",
    ),
    Key(
        "starttls",
        Choice(*STARTTLS, what="protocol"),
        doc="the plaintext opening before TLS",
        default_doc="none (TLS from the first byte)",
    ),
    text="mapping",
)


class EndpointKind(Kind[tuple[str, int, str | None, str | None]]):
    """`host:port`, or `{address, sni, starttls}`: (host, port, sni or None, starttls)."""

    text = "`host:port` or `{address, sni, starttls}`"

    def convert(self, ctx: Checker, v: Value) -> tuple[str, int, str | None, str | None] | None:
        if not isinstance(v.value, dict):
            parsed = HostPort().convert(ctx, v)
            return None if parsed is None else (*parsed, None, None)
        m = ENDPOINT.read(ctx, v)
        sni = ENDPOINT.get(ctx, m, "sni")
        starttls = ENDPOINT.get(ctx, m, "starttls")
        parsed = ENDPOINT.get(ctx, m, "address")
        return None if parsed is None else (*parsed, sni, starttls)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [HostPort().schema(), ENDPOINT.schema()]}


ENDPOINTS = ListOf(EndpointKind(), "list of `host:port` or `{address, sni, starttls}`")
DEPLOY_ENDPOINTS = ListOf(
    EndpointKind(),
    ENDPOINTS.text,
    nonempty=True,
    empty="no endpoints: nothing would verify or watch what is served; list them "
    "(starttls: postgres, smtp, imap, ldap for a database or mail server), or "
    "say 'endpoints: none' with an 'endpoints_reason'",
)


def unwrap(node: Kind[Any]) -> Kind[Any]:
    """The section or list inside an `Either` (a key that also takes `false` or `none`)
    or a `OneOrList` (one mapping, or several in order of preference)."""
    return node.other if isinstance(node, Either | OneOrList) else node
