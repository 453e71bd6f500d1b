"""certagent(1), generated from the command-line parser, so the manual says what the
parser accepts (contrib/man/certagent.1; `make docs` rewrites it, a test fails when it
is stale). Pure: a parser in, roff text out.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from . import __version__

_COMMON = {"-c", "--json", "-v", "-q", "-h"}  # said once, under OPTIONS


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in ".'" else line for line in text.split("\n"))


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _helps(sub: argparse._SubParsersAction) -> dict[str, str]:  # type: ignore[type-arg]
    return {a.dest: a.help or "" for a in sub._choices_actions}


def _options(parser: argparse.ArgumentParser, *, common: bool) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings and (action.option_strings[0] in _COMMON) != common:
            continue
        if action.option_strings:
            flags = ", ".join(f"\\fB{_esc(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                flags += f" \\fI{_esc(action.metavar or action.dest.upper())}\\fR"  # type: ignore[arg-type]
        elif common:
            continue
        else:
            flags = f"\\fI{_esc(str(action.metavar or action.dest))}\\fR"
        yield f".TP\n{flags}\n{_esc(action.help or '')}"


def _command(name: str, parser: argparse.ArgumentParser, help_text: str) -> Iterator[str]:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    yield f".SS {_esc(name)}\n{_esc(help_text)}\n.PP\n.nf\n{_esc(' '.join(usage.split()))}\n.fi"
    yield from _options(parser, common=False)
    sub = _subparsers(parser)
    if sub is not None:
        helps = _helps(sub)
        for child, child_parser in sub.choices.items():
            yield from _command(f"{name} {child}", child_parser, helps.get(child, ""))


def render(parser: argparse.ArgumentParser, epilog: str) -> str:
    """The manual page, in roff (man macros)."""
    out = [
        f'.TH CERTAGENT 1 "" "certagent {__version__}" "User Commands"',
        ".SH NAME",
        f"certagent \\- {_esc(parser.description or '')}",
        ".SH SYNOPSIS",
        "\\fBcertagent\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        "certagent renews ACME certificates, renders the web server's configuration from "
        "templates, rehearses the deploy on a staging CA, checks a keepalived peer before "
        "it swaps, verifies what every endpoint serves and rolls back when anything fails.",
        "The configuration keys are described in \\fIdocs/configuration.md\\fR and, as a "
        "JSON Schema, by \\fBcertagent config schema\\fR.",
        ".SH OPTIONS",
        "These are accepted before or after any command.",
        *_options(parser, common=True),
        ".SH COMMANDS",
    ]
    sub = _subparsers(parser)
    if sub is not None:
        helps = _helps(sub)
        for name, child in sub.choices.items():
            out.extend(_command(name, child, helps.get(name, "")))
    out += [
        ".SH EXIT STATUS",
        ".nf",
        _esc(epilog.split("\n\n")[0].removeprefix("exit status (a contract for cron and Salt):\n")),
        ".fi",
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBCERTAGENT_CONFIG\\fR",
        "The configuration file when \\fB\\-c\\fR is not given.",
        ".SH FILES",
        ".TP",
        "\\fI/etc/certagent/certagent.yaml\\fR",
        "The configuration (default).",
        ".TP",
        "\\fI/etc/certagent/templates\\fR",
        "Templates searched before the shipped ones.",
        ".TP",
        "\\fI/var/lib/certagent\\fR",
        "The state directory (default): releases, accounts, history, the lock.",
        ".SH SEE ALSO",
        "\\fBcertbot\\fR(1), \\fBlego\\fR(1), \\fBkeepalived\\fR(8), \\fBnginx\\fR(8)",
    ]
    return "\n".join(out) + "\n"
