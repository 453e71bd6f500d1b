"""The commands that renew and deploy: renew, plan, deploy, rollback, rehearse,
receive (the keepalived MASTER's hand-over) and revoke.

Side effects: through `api` and `lifecycle` (imported when a command runs).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from .args import failover_override, seconds
from .base import Command, need
from .output import TerminalProgress

if TYPE_CHECKING:
    from ..model import Config, Report

log = logging.getLogger("certagent")


def _renew_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="renew even if not due (a certificate issued earlier and not deployed yet is "
        "deployed instead of ordering)",
    )
    p.add_argument(
        "--new-order",
        action="store_true",
        help="order a new certificate even when one issued earlier is not deployed yet "
        "(implies --force)",
    )
    p.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="order even when the CA's duplicate-certificate limit (ca.max_duplicates) "
        "would be reached",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="touch nothing in production: show what is due and rehearse it on the staging "
        "CA (if one is configured)",
    )
    p.add_argument(
        "--splay",
        type=seconds(86400),
        default=0.0,
        metavar="SECONDS",
        help="first wait a random time up to SECONDS (spreads cron runs over many hosts)",
    )
    failover_override(p)
    p.add_argument("names", nargs="*", metavar="NAME", help="certificates (default: all)")


def _renew(args: argparse.Namespace, config: Config | None, as_json: bool) -> Report:
    """renew and rehearse: a progress line on a terminal, quiet in cron."""
    from .. import api

    config = need(config)
    if args.command == "renew" and args.dry_run:
        return _dry_run(config, args)
    quiet = getattr(args, "quiet", False)
    tty = sys.stderr.isatty() and not as_json and not quiet
    progress = TerminalProgress(sys.stderr) if tty else None
    update = progress.update if progress else None
    try:
        if args.command == "rehearse":
            return api.rehearse(config, args.names, progress=update)
        if args.splay > 0:
            api.splay(args.splay)
        return api.renew(
            config,
            args.names,
            args.force,
            progress=update,
            failover_override=args.failover_override,
            new_order=args.new_order,
            allow_duplicate=args.allow_duplicate,
        )
    finally:
        if progress:
            progress.clear()


def _dry_run(config: Config, args: argparse.Namespace) -> Report:
    """`renew --dry-run`: production is neither locked, ordered nor touched. What is due
    is shown, and rehearsed on the staging CA when one is configured (certbot's
    --dry-run, which orders from a staging CA, is the habit this keeps)."""
    from .. import api

    planned = api.plan_run(config, args.names, args.force)
    due = [r.name for r in planned.results if r.decision.due]
    if config.staging is None or not due:
        if config.staging is None:
            log.warning("renew --dry-run: no staging CA is configured; showing the plan only")
        return planned
    return api.rehearse(config, due)


def _plan_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="plan as if --force were given")
    p.add_argument("names", nargs="*", metavar="NAME")


def _plan(args: argparse.Namespace, config: Config | None, as_json: bool) -> Report:
    from .. import api

    return api.plan_run(need(config), args.names, args.force)


def _deploy_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    failover_override(p)


def _deploy(args: argparse.Namespace, config: Config | None, as_json: bool) -> Report:
    from .. import api

    return api.deploy(need(config), args.name, failover_override=args.failover_override)


def _name(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")


def _rollback(args: argparse.Namespace, config: Config | None, as_json: bool) -> Report:
    from .. import api

    return api.rollback(need(config), args.name)


def _names(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="certificates (default: all)")


def _some(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME")


def _receive(args: argparse.Namespace, config: Config | None, as_json: bool) -> Report:
    from .. import api
    from ..failover import MAX_GROUP_PAYLOAD

    return api.receive(need(config), args.names, sys.stdin.buffer.read(MAX_GROUP_PAYLOAD + 1))


def _revoke_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--reason",
        default="unspecified",
        choices=[
            "unspecified",
            "keyCompromise",
            "affiliationChanged",
            "superseded",
            "cessationOfOperation",
        ],
        help="RFC 5280 reason (keyCompromise: the next key is always new)",
    )


def _revoke(args: argparse.Namespace, config: Config | None, as_json: bool) -> Report:
    from .. import lifecycle

    return lifecycle.revoke(need(config), args.name, args.reason)


COMMANDS = (
    Command("renew", "renew what is due (for cron, Salt, people)", _renew_args, _renew),
    Command("plan", "what renew would do now, and why", _plan_args, _plan),
    Command(
        "deploy",
        "deploy without ordering: the newest certificate issued and not deployed yet, "
        "else the current release again (render, test, hook, verify)",
        _deploy_args,
        _deploy,
    ),
    Command("rollback", "re-activate the previous release, reload and verify it", _name, _rollback),
    Command(
        "rehearse",
        "rehearse the whole deploy on the staging CA now (production untouched)",
        _names,
        _renew,
    ),
    Command(
        "receive",
        "deploy a release handed over on stdin (run by the keepalived MASTER)",
        _some,
        _receive,
    ),
    Command("revoke", "revoke NAME's live certificate (renewed next run)", _revoke_args, _revoke),
)
