"""The commands that look without changing anything: status, check (a monitoring
plugin), health (a keepalived track script), history and metrics.

Side effects: through `api`, `monitoring` and `health` (imported when a command runs).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import ConfigError, ExitStatus, PluginStatus, UsageError
from ..jsontext import write_items, write_json
from ..starttls import PROTOCOLS as STARTTLS_PROTOCOLS
from .args import count, days, host_port, seconds
from .base import Command, need, no_arguments
from .output import out, print_history, print_status

if TYPE_CHECKING:
    from ..model import Config


def _status_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME")


def _status(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    from .. import api

    rows = api.status(need(config), args.names)
    if as_json:
        out(True, {"schema": 1, "certificates": [r.to_json() for r in rows]}, "")
    else:
        print_status(rows)
    return ExitStatus.OK


def _check_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="certificates or monitor endpoints")
    p.add_argument(
        "-w",
        "--warning",
        type=days,
        metavar="DAYS",
        help="WARNING at or below this many days left (default: monitor.warning_days)",
    )
    p.add_argument(
        "-C",
        "--critical",
        type=days,
        metavar="DAYS",
        help="CRITICAL at or below this many days left (-c is the config file)",
    )
    p.add_argument(
        "-t",
        "--timeout",
        type=seconds(600, least=0.01),
        metavar="SECONDS",
        help="per endpoint: connect, STARTTLS and handshake (default: monitor.timeout)",
    )
    p.add_argument(
        "-H",
        "--host",
        metavar="HOST[:PORT]",
        help="probe only this endpoint (port 443 unless given; no config needed)",
    )
    p.add_argument("--sni", metavar="NAME", help="with -H: the server name (default: HOST)")
    p.add_argument(
        "--starttls", choices=sorted(STARTTLS_PROTOCOLS), help="with -H: the plaintext opening"
    )
    p.add_argument(
        "--trust-root",
        action="append",
        default=[],
        metavar="PEM",
        help="with -H: also trust this root (repeatable)",
    )
    p.add_argument(
        "-V",
        "--plugin-version",
        action="version",
        version=f"certagent check {__version__}",
        help="print the version (a monitoring plugin's -V) and exit",
    )


def _check(args: argparse.Namespace, config: Config | None, as_json: bool) -> PluginStatus:
    """A monitoring plugin: its exit status is the state (0-3), returned as such."""
    from .. import api

    thresholds = api.Thresholds(args.warning, args.critical, args.timeout)
    if args.host is not None:
        if args.names:
            raise UsageError("check: give certificate names or -H, not both")
        host, port = host_port(args.host)
        from ..model import Endpoint

        endpoint = Endpoint(host, port, args.sni or host)
        report = api.check_endpoint(
            endpoint,
            starttls=args.starttls,
            thresholds=thresholds,
            trust_roots=[Path(p) for p in args.trust_root],
        )
    else:
        if args.sni or args.starttls or args.trust_root:
            raise UsageError("check: --sni, --starttls and --trust-root go with -H")
        report = api.check(
            api.load_config(getattr(args, "config", None)), args.names, thresholds=thresholds
        )
    if as_json:  # an endpoint at a time (10,000 are ~5 MB), as json.dumps(indent=2) lays it out
        write_json(report.to_json(lazy=True), sys.stdout.write)
        sys.stdout.write("\n")
    else:
        print(report.text)
    return report.state


def _health_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=seconds(600, least=0.01),
        default=2.0,
        metavar="SECONDS",
        help="per endpoint (default 2)",
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="only the certificates of this keepalived instance (one track script each)",
    )


def _health(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    """A keepalived track script judges the web server, not certagent's configuration: a
    config error (likely the same on both nodes) must not put every node in FAULT at once
    and take the VIP away. It is said on stderr and left to `renew` (exit 78) to report."""
    from .. import config as config_mod
    from ..health import health as judge  # not api: a track script must stay light

    try:
        config = config_mod.load(
            config_mod.default_path(getattr(args, "config", None), dict(os.environ))
        )
    except ConfigError as exc:
        print(f"certagent health: not judging: {exc}", file=sys.stderr)
        return ExitStatus.OK
    except Exception as exc:  # a loader bug is not the web server's fault either
        print(f"certagent health: not judging: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitStatus.OK
    health = judge(config, args.timeout, args.instance)
    out(as_json, {"schema": 1, "ok": health.ok, "endpoints": list(health.lines)},
        "\n".join(health.lines))
    return ExitStatus.OK if health.ok else ExitStatus.FAILED


def _history_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="only runs that touched NAME")
    p.add_argument("-n", "--limit", type=count, default=20, help="how many runs (default 20)")


def _history(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    from .. import api

    records = api.history_records(need(config), args.name, args.limit)
    if as_json:  # a run at a time: a record of 10,000 certificates is 1.3 MB
        sys.stdout.write('{\n  "schema": 1,\n  "runs": ')
        write_items(records, sys.stdout.write, 1)
        sys.stdout.write("\n}\n")
    else:
        print_history(records, args.name, getattr(args, "verbose", 0) or 0)
    return ExitStatus.OK


def _metrics(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    from .. import metrics

    (metrics.emit_json if as_json else metrics.emit)(need(config), sys.stdout.write)
    return ExitStatus.OK


COMMANDS = (
    Command(
        "check",
        "probe every endpoint; monitoring-plugin output and exit codes (0-3)",
        _check_args,
        _check,
        needs_config=False,
    ),
    Command(
        "health",
        "exit 1 unless this node serves valid certificates (a keepalived vrrp_script)",
        _health_args,
        _health,
        needs_config=False,
    ),
    Command("status", "certificates, expiry, next renewal", _status_args, _status),
    Command("history", "the audit log: recent runs, newest first", _history_args, _history),
    Command("metrics", "print the Prometheus metrics", no_arguments, _metrics),
)
