"""The command-line shell: argparse in (the grammar is in `cliparser`), report out, one
place that maps errors to exit codes.

Side effects: writes to stdout/stderr. Everything else happens in `api`.
Imports nothing heavy at start-up (no acme, josepy, requests or jinja2).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .cliparser import build_parser, host_port
from .errors import CertagentError, ConfigError, ExitStatus, PluginStatus, UsageError
from .system import SystemClock

if TYPE_CHECKING:  # the model is imported where it is used: --help stays light
    from .api import StatusRow
    from .model import Config, Report

log = logging.getLogger("certagent")


def main(argv: Sequence[str] | None = None) -> int:
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
        if checking:
            return _check(args)
        if args.command == "config" and args.config_command == "schema":
            from .configspec import json_schema

            print(json.dumps(json_schema(), indent=2))
            return ExitStatus.OK
        if args.command == "restore":  # needs no configuration: the backup carries it
            return _restore(args)
        if args.command == "health":
            return _health(args)
        return int(_dispatch(args))
    except CertagentError as exc:
        if checking:  # a monitoring system must read "cannot check" as UNKNOWN, not as OK
            summary = str(exc).splitlines()[0]
            if isinstance(exc, ConfigError):  # the reason itself on the status line
                summary = f"{exc.source}: " + "; ".join(str(p) for p in exc.problems[:3])
            print(f"CERTAGENT UNKNOWN - {summary}")  # plugins speak on stdout only
            for line in str(exc).splitlines()[1:]:
                print(line)
            return PluginStatus.UNKNOWN
        if as_json:  # the same schema as a report: a caller parses one thing
            error = {"schema": 1, "error": str(exc), "error_code": _code(exc),
                     "exit_status": int(exc.exit_status)}  # fmt: skip
            if isinstance(exc, ConfigError):
                error["problems"] = [
                    {"path": p.path, "line": p.line, "message": p.message} for p in exc.problems
                ]
            print(json.dumps(error, indent=2))
        print(f"certagent: {exc}", file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt:
        print("certagent: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
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


def _code(exc: CertagentError) -> str:
    if exc.code:
        return exc.code
    name = type(exc).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower() or "error"


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import api

    thresholds = api.Thresholds(args.warning, args.critical, args.timeout)
    if args.host is not None:
        if args.names:
            raise UsageError("check: give certificate names or -H, not both")
        host, port = host_port(args.host)
        from .model import Endpoint

        endpoint = Endpoint(host, port, args.sni or host)
        report = api.check_endpoint(endpoint, starttls=args.starttls, thresholds=thresholds,
                                    trust_roots=[Path(p) for p in args.trust_root])  # fmt: skip
    else:
        if args.sni or args.starttls or args.trust_root:
            raise UsageError("check: --sni, --starttls and --trust-root go with -H")
        config = api.load_config(getattr(args, "config", None))
        report = api.check(config, args.names, thresholds=thresholds)
    if getattr(args, "json", False):
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.text)
    return int(report.state)


def _health(args: argparse.Namespace) -> int:
    """A keepalived track script judges the web server, not certagent's configuration: a
    config error (likely the same on both nodes) must not put every node in FAULT at once
    and take the VIP away. It is said on stderr and left to `renew` (exit 78) to report."""
    import os

    from . import config as config_mod
    from .health import health as judge  # not api: a track script must stay light

    try:
        config = config_mod.load(config_mod.default_path(getattr(args, "config", None),
                                                         dict(os.environ)))  # fmt: skip
    except ConfigError as exc:
        print(f"certagent health: not judging: {exc}", file=sys.stderr)
        return 0
    except Exception as exc:  # a loader bug is not the web server's fault either
        print(f"certagent health: not judging: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    health = judge(config, args.timeout, args.instance)
    _out(
        getattr(args, "json", False),
        {"ok": health.ok, "endpoints": list(health.lines)},
        "\n".join(health.lines),
    )
    return 0 if health.ok else 1


def _restore(args: argparse.Namespace) -> int:
    """Restore into the state directory of the configuration -c names (or, with
    --with-config and no configuration there yet, the backup's own), never elsewhere."""
    import os
    from pathlib import Path

    from . import backup
    from . import config as config_mod

    config_path = config_mod.default_path(getattr(args, "config", None), dict(os.environ))
    manifest, notes = backup.restore(
        Path(args.file), config_path, args.force, args.with_config, SystemClock().now()
    )
    if getattr(args, "json", False):
        print(json.dumps({"restored": manifest.summary(), "notes": notes}, indent=2))
    else:
        print("\n".join(notes))
    return 0


def _ops(args: argparse.Namespace, config: Config, as_json: bool) -> ExitStatus:
    """history, metrics, backup: read or copy state, never change it."""
    from pathlib import Path

    from . import api

    if args.command == "metrics":
        from . import metrics

        sys.stdout.write(metrics.render(config))
    elif args.command == "history":
        records = api.history(config, args.name, args.limit)
        if as_json:
            _out(True, {"schema": 1, "runs": records}, "")
        else:
            _print_history(records, args.name)
    else:
        from . import backup

        manifest = backup.backup(config, Path(args.file), SystemClock().now())
        _out(
            as_json,
            {"backup": str(Path(args.file).resolve()), **manifest.summary()},
            f"wrote {args.file}: {manifest.files} file(s) from {manifest.state_dir} "
            f"and {manifest.config_path}",
        )
    return ExitStatus.OK


def _print_history(records: list[dict[str, Any]], name: str | None) -> None:
    for r in records:
        who, code = r.get("user"), r.get("exit_status")
        print(f"{r.get('time')}  {r.get('command'):<8} by {who}  exit {code}")
        for c in r.get("certificates", []):
            if name and c.get("name") != name:
                continue
            what = c.get("error") or c.get("reason")
            print(f"  {c.get('name')}: {c.get('outcome')}: {what}")
            for f in c.get("files_changed") or []:
                print(f"    changed {f}")
            for o in c.get("overrides") or []:
                if isinstance(o, dict):
                    print(f"    override {o.get('override')}: {o.get('detail')}")
                else:  # recorded by a version before 2026-12
                    print(f"    override: {o}")


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


def _dispatch(args: argparse.Namespace) -> ExitStatus:
    """The configuration loaded once, then the command's entry from the table: it
    returns an exit status (it printed its own answer) or a report (printed here)."""
    from . import api

    as_json = getattr(args, "json", False)
    config = api.load_config(getattr(args, "config", None))
    result = COMMANDS[args.command](args, config, as_json)
    if isinstance(result, ExitStatus):
        return result
    status = api.exit_status(result)
    if as_json and args.command == "receive":  # one line: the MASTER reads it after logs
        print(json.dumps({**result.to_json(), "exit_status": int(status)}))
    elif as_json:
        _out(True, {**result.to_json(), "exit_status": int(status)}, "")
    else:
        _print_report(result, getattr(args, "verbose", 0) or 0, getattr(args, "quiet", False))
    return status


def _import(args: argparse.Namespace, config: Config, as_json: bool) -> ExitStatus:
    from pathlib import Path

    from . import importer

    done = importer.run(config, args.source, Path(args.dir) if args.dir else None)
    text = "\n".join(done.notes)
    if done.snippet:
        text += f"\n\nadd to {config.source}:\n{done.snippet}"
    _out(as_json, done.to_json(), text)
    return ExitStatus.OK


def _account(args: argparse.Namespace, config: Config, as_json: bool) -> ExitStatus:
    from . import lifecycle

    action = args.account_command
    if action == "deactivate" and not args.yes:
        raise UsageError("account deactivate cannot be undone: add --yes to mean it")
    result = lifecycle.account(config, action)
    details = "\n".join(f"{k}: {v}" for k, v in result.details.items())
    _out(as_json, result.to_json(), f"account {action} at {result.directory}\n{details}")
    return ExitStatus.OK


def _validate(args: argparse.Namespace, config: Config, as_json: bool) -> ExitStatus:
    from . import api

    api.validate(config)
    names = [c.name for c in config.certificates]
    _out(as_json, {"valid": True, "source": str(config.source), "certificates": names},
         f"{config.source}: valid, {len(names)} certificate(s)")  # fmt: skip
    return ExitStatus.OK


def _status(args: argparse.Namespace, config: Config, as_json: bool) -> ExitStatus:
    from . import api

    rows = api.status(config, args.names)
    if as_json:
        _out(True, {"schema": 1, "certificates": [r.to_json() for r in rows]}, "")
    else:
        _print_status(rows)
    return ExitStatus.OK


def _plan(args: argparse.Namespace, config: Config, as_json: bool) -> Report:
    from . import api

    return api.plan_run(config, args.names, args.force)


def _receive(args: argparse.Namespace, config: Config, as_json: bool) -> Report:
    from . import api
    from .failover import MAX_GROUP_PAYLOAD

    return api.receive(config, args.names, sys.stdin.buffer.read(MAX_GROUP_PAYLOAD + 1))


def _deploy(args: argparse.Namespace, config: Config, as_json: bool) -> Report:
    from . import api

    return api.deploy(config, args.name, failover_override=args.failover_override)


def _rollback(args: argparse.Namespace, config: Config, as_json: bool) -> Report:
    from . import api

    return api.rollback(config, args.name)


def _revoke(args: argparse.Namespace, config: Config, as_json: bool) -> Report:
    from . import lifecycle

    return lifecycle.revoke(config, args.name, args.reason)


def _renew(args: argparse.Namespace, config: Config, as_json: bool) -> Report:
    """renew and rehearse: a progress line on a terminal, quiet in cron."""
    from . import api

    if args.command == "renew" and args.dry_run:
        return _dry_run(config, args)
    quiet = getattr(args, "quiet", False)
    tty = sys.stderr.isatty() and not as_json and not quiet
    progress = _TerminalProgress(sys.stderr) if tty else None
    update = progress.update if progress else None
    try:
        if args.command == "rehearse":
            return api.rehearse(config, args.names, progress=update)
        if args.splay > 0:
            api.splay(args.splay)
        return api.renew(config, args.names, args.force, progress=update,
                         failover_override=args.failover_override,
                         new_order=args.new_order,
                         allow_duplicate=args.allow_duplicate)  # fmt: skip
    finally:
        if progress:
            progress.clear()


Entry = Callable[[argparse.Namespace, "Config", bool], "ExitStatus | Report"]

# Each command that needs the configuration, and its entry (check, restore, health and
# `config schema` are answered before a configuration is loaded: see `main`).
COMMANDS: dict[str, Entry] = {
    "renew": _renew,
    "rehearse": _renew,
    "plan": _plan,
    "status": _status,
    "deploy": _deploy,
    "receive": _receive,
    "rollback": _rollback,
    "revoke": _revoke,
    "account": _account,
    "import": _import,
    "history": _ops,
    "metrics": _ops,
    "backup": _ops,
    "config": _validate,
}


def _dry_run(config: Config, args: argparse.Namespace) -> Report:
    """`renew --dry-run`: production is neither locked, ordered nor touched. What is due
    is shown, and rehearsed on the staging CA when one is configured (certbot's
    --dry-run, which orders from a staging CA, is the habit this keeps)."""
    from . import api

    planned = api.plan_run(config, args.names, args.force)
    due = [r.name for r in planned.results if r.decision.due]
    if config.staging is None or not due:
        if config.staging is None:
            log.warning("renew --dry-run: no staging CA is configured; showing the plan only")
        return planned
    return api.rehearse(config, due)


def _out(as_json: bool, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def _print_report(report: Report, verbose: int, quiet: bool = False) -> None:
    from .model import Outcome

    planning = report.command == "plan"
    rehearsing = report.command == "rehearse"
    if planning and not verbose:  # one line each, one write however many certificates
        lines = [f"{r.name}: {'due' if r.decision.due else 'not due'}: {r.decision.reason}"
                 for r in report.results]  # fmt: skip
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        return
    for r in report.results:
        failed = r.outcome not in (Outcome.SKIPPED, Outcome.RENEWED, Outcome.REVOKED)
        if quiet and not planning and not failed:
            continue
        if r.outcome is Outcome.SKIPPED and not (verbose or planning or rehearsing or r.steps):
            continue  # silent when nothing is due: cron mails only what matters (a due
            # certificate skipped on a keepalived BACKUP has steps and is said)
        if planning:
            print(f"{r.name}: {'due' if r.decision.due else 'not due'}: {r.decision.reason}")
        elif r.outcome is Outcome.SKIPPED:
            print(f"{r.name}: nothing to do: {r.decision.reason}")
        elif rehearsing:
            if r.outcome is Outcome.RENEWED:
                print(f"{r.name}: rehearsal passed; staging release {r.release}")
            else:
                print(f"{r.name}: REHEARSAL FAILED: {r.error}", file=sys.stderr)
        elif r.outcome is Outcome.RENEWED:
            print(
                f"{r.name}: renewed ({r.decision.reason}); release {r.release}, "
                f"valid until {r.not_after:%Y-%m-%d %H:%M UTC}"
            )
        elif r.outcome is Outcome.REVOKED:
            print(f"{r.name}: revoked release {r.release}; the next renew replaces it")
        elif report.command == "rollback" and r.outcome is Outcome.ROLLED_BACK:
            print(f"{r.name}: rolled back; release {r.release} is live again")
        else:
            print(f"{r.name}: {r.outcome.value.upper()}: {r.error or 'see the steps'}",
                  file=sys.stderr)  # fmt: skip
            if r.outcome is Outcome.BROKEN:
                print(
                    f"{r.name}: BROKEN: the rollback failed too; check the web server NOW",
                    file=sys.stderr,
                )
        if verbose or rehearsing or failed:
            out = sys.stderr if failed else sys.stdout
            for s in r.steps:
                mark = "ok" if s.ok else "FAILED"
                # the failing step's detail is the error just printed: not twice
                detail = "(above)" if not s.ok and s.detail == r.error else s.detail
                print(f"  {s.step:<17} {mark:<6} {s.seconds:7.3f}s  {detail}", file=out)


def _print_status(rows: list[StatusRow]) -> None:

    header = ("NAME", "NOT AFTER", "DAYS", "NEXT RENEWAL", "LAST", "NAMES")
    table = [header]
    for r in rows:
        table.append(
            (
                r.name,
                f"{r.not_after:%Y-%m-%d %H:%M}" if r.not_after else "-",
                f"{r.days_left:.1f}" if r.days_left is not None else "-",
                "due now"
                if r.due
                else (f"{r.next_renewal:%Y-%m-%d %H:%M}" if r.next_renewal else "-"),
                r.last_outcome or "-",
                ",".join(r.names),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in table]  # fmt: skip
    sys.stdout.write("\n".join(lines) + "\n")  # one write, however many certificates


class _TerminalProgress:
    """One self-overwriting status line on an interactive terminal; nothing in cron."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def update(self, label: str, what: str) -> None:
        self.stream.write(f"\r\033[K{label}: {what}")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


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
