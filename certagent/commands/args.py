"""The grammar's pieces every command uses: the parser class (no abbreviations, usage
errors as UsageError with a suggestion) and the argument types.

Imports nothing heavy.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from ..errors import UsageError


class Parser(argparse.ArgumentParser):
    """No abbreviations (`--forc` is not `--force`), usage errors as UsageError (exit
    64), and a suggestion for a mistyped command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            import difflib  # only for a mistyped choice

            close = difflib.get_close_matches(m.group(1), choices, n=1)
            if close:
                message += f"; did you mean '{close[0]}'?"
        raise UsageError(f"{message} (see {self.prog} --help)")


def actions(p: argparse.ArgumentParser, dest: str, metavar: str) -> Any:
    """A command's own sub-commands (`account show`, `config validate`)."""
    sub = p.add_subparsers(dest=dest, metavar=metavar, parser_class=Parser)
    sub.required = True
    return sub


def seconds(limit: float, least: float = 0.0) -> Any:
    """An argparse type: a finite number of seconds from `least` to `limit`."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not least <= value <= limit:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(
                f"expected {least:g} to {limit:g} seconds, got {text!r}"
            )
        return value

    return convert


def days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not 0 <= value <= 3650:
        raise argparse.ArgumentTypeError(f"expected 0 to 3650 days, got {text!r}")
    return value


def host_port(text: str) -> tuple[str, int]:
    """host, host:port, [v6] or [v6]:port; port 443 when not given."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([^:\s\[\]]+)(?::(\d{1,5}))?", text)
    port_text = (m.group(2) or m.group(4)) if m else None
    port = int(port_text) if port_text else 443
    if m is None or not 0 < port < 65536:
        raise UsageError(f"-H: expected HOST or HOST:PORT (IPv6 as [addr]:port), got {text!r}")
    return m.group(1) or m.group(3), port


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1000000, got {text!r}")
    return value


def failover_override(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--failover-override",
        metavar="REASON",
        help="maintenance: skip the keepalived checks and the peer; deploy here only (logged)",
    )
