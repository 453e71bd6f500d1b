"""The command-line shell: argparse in (the grammar is in `cliparser`, each command's
part and entry in `commands`), the answer out, and the one place that maps errors to
exit codes.

Side effects: writes to stdout/stderr. Everything else happens in the commands' entries.
Imports nothing heavy at start-up (no acme, josepy, requests or jinja2).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
import sys
from collections.abc import Sequence

from .cliparser import build_parser
from .commands import BY_NAME
from .commands.output import out, print_report
from .errors import CertagentError, ConfigError, ExitStatus, PluginStatus

log = logging.getLogger("certagent")


GC_FIRST_GENERATION = 20_000  # objects allocated between young collections (default 700)


def main(argv: Sequence[str] | None = None) -> int:
    # A run allocates what it keeps (10,000 certificates' configuration, their results):
    # at the default threshold the collector would sweep it some 500 times in vain.
    # Cycles are still collected; 10,000 certificates load 15 % faster, peak RSS the same.
    gc.set_threshold(GC_FIRST_GENERATION)
    verbose = 0
    checking = False
    words = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in words  # known before parsing, so a usage error is JSON too
    # a monitoring plugin's usage error is UNKNOWN (3), never exit 64: known before parsing
    checking = "check" in words[:1] or (bool(words) and _command(words) == "check")
    try:
        args = build_parser().parse_args(words)
        checking = args.command == "check"
        verbose = getattr(args, "verbose", 0) or 0
        _setup_logging(verbose, getattr(args, "quiet", False))
        return int(_dispatch(args))
    except CertagentError as exc:
        if checking and as_json:  # the error document, with the plugin's UNKNOWN
            print(json.dumps(_error_json(exc, PluginStatus.UNKNOWN), indent=2))
            return PluginStatus.UNKNOWN
        if checking:  # a monitoring system must read "cannot check" as UNKNOWN, not as OK
            summary = str(exc).splitlines()[0]
            if isinstance(exc, ConfigError):  # the reason itself on the status line
                summary = f"{exc.source}: " + "; ".join(str(p) for p in exc.problems[:3])
            print(f"CERTAGENT UNKNOWN - {summary}")  # plugins speak on stdout only
            for line in str(exc).splitlines()[1:]:
                print(line)
            return PluginStatus.UNKNOWN
        if as_json:  # the same schema as a report: a caller parses one thing
            print(json.dumps(_error_json(exc, exc.exit_status), indent=2))
        print(f"certagent: {exc}", file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        print("certagent: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe (a hook's, a socket's): a bug below, said as one
        return ExitStatus.PIPE  # `certagent metrics | head`: nothing left to say
    except Exception as exc:  # a bug: say so plainly, traceback only on request
        log.debug("internal error", exc_info=True)
        if checking:  # the plugin contract holds even for a bug: UNKNOWN, said on stdout
            print(f"CERTAGENT UNKNOWN - internal error: {type(exc).__name__}: {exc}")
            return PluginStatus.UNKNOWN
        print(
            f"certagent: internal error: {type(exc).__name__}: {exc} (run with -vv for details)",
            file=sys.stderr,
        )
        return int(ExitStatus.FAILED)


def _stdout_gone() -> bool:
    """Whether stdout's reader went away (poll says so of a pipe without a reader);
    if so, stdout is pointed at /dev/null so that the interpreter's last flush says
    nothing either."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = any(ev & select.POLLERR for _, ev in poller.poll(0))
        if gone:
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (OSError, ValueError, AttributeError):  # stdout replaced by a caller
        return False
    return gone


def _error_json(exc: CertagentError, status: int) -> dict[str, object]:
    """The error document under --json (schemas/error.schema.json)."""
    error: dict[str, object] = {"schema": 1, "error": str(exc), "error_code": _code(exc),
                                "exit_status": int(status)}  # fmt: skip
    if isinstance(exc, ConfigError):
        error["problems"] = [
            {"path": p.path, "line": p.line, "message": p.message} for p in exc.problems
        ]
    return error


def _code(exc: CertagentError) -> str:
    if exc.code:
        return exc.code
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower() or "error"


def _command(words: Sequence[str]) -> str | None:
    """The command word of an argv (the first word that is not an option or its value)."""
    takes_value = {"-c", "--config"}
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def _dispatch(args: argparse.Namespace) -> int:
    """The command's entry, given the configuration when it declared it needs one: it
    answers with an exit status (it printed its own answer) or a report (printed here)."""
    command = BY_NAME[args.command]
    as_json = getattr(args, "json", False)
    config = None
    if command.needs_config:
        from . import api

        config = api.load_config(getattr(args, "config", None))
    result = command.run(args, config, as_json)
    if isinstance(result, ExitStatus | PluginStatus):
        return int(result)
    from . import api

    status = api.exit_status(result)
    if as_json and args.command == "receive":  # one line: the MASTER reads it after logs
        print(json.dumps({**result.to_json(), "exit_status": int(status)}))
    elif as_json:
        out(True, {**result.to_json(), "exit_status": int(status)}, "")
    else:
        print_report(result, getattr(args, "verbose", 0) or 0, getattr(args, "quiet", False))
    return int(status)


def _setup_logging(verbose: int, quiet: bool = False) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if quiet:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("certagent: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if verbose < 3:
        # acme logs whole JWS payloads at DEBUG; keep them out unless asked for (-vvv).
        logging.getLogger("acme").setLevel(max(level, logging.INFO))
        logging.getLogger("urllib3").setLevel(max(level, logging.INFO))
