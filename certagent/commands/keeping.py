"""The commands that keep and move state: backup, restore, import (from certbot or
lego), account (show, roll over, deactivate) and config (validate, schema).

Side effects: through `backup`, `importer`, `lifecycle` and `api` (imported when a
command runs).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExitStatus, UsageError
from ..system import SystemClock
from .args import actions
from .base import Command, need
from .output import out

if TYPE_CHECKING:
    from ..model import Config


def _file(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the archive to write (tar.gz, mode 0600)")


def _backup(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    from .. import backup

    manifest = backup.backup(need(config), Path(args.file), SystemClock().now())
    out(
        as_json,
        {"schema": 1, "backup": str(Path(args.file).resolve()), **manifest.summary()},
        f"wrote {args.file}: {manifest.files} file(s) from {manifest.state_dir} "
        f"and {manifest.config_path}",
    )
    return ExitStatus.OK


def _restore_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--force",
        action="store_true",
        help="move existing state and config aside (never deleted) and restore",
    )
    p.add_argument(
        "--with-config",
        action="store_true",
        help="also restore the configuration file, to the path -c names",
    )


def _restore(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    """Restore into the state directory of the configuration -c names (or, with
    --with-config and no configuration there yet, the backup's own), never elsewhere."""
    from .. import backup
    from .. import config as config_mod

    config_path = config_mod.default_path(getattr(args, "config", None), dict(os.environ))
    manifest, notes = backup.restore(
        Path(args.file), config_path, args.force, args.with_config, SystemClock().now()
    )
    if as_json:
        print(json.dumps({"schema": 1, "restored": manifest.summary(), "notes": notes},
                         indent=2))
    else:
        print("\n".join(notes))
    return ExitStatus.OK


def _import_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["certbot", "lego"])
    p.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help="default: /etc/letsencrypt (certbot), /root/.lego (lego)",
    )


def _import(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    from .. import importer

    config = need(config)
    done = importer.run(config, args.source, Path(args.dir) if args.dir else None)
    text = "\n".join(done.notes)
    if done.snippet:
        text += f"\n\nadd to {config.source}:\n{done.snippet}"
    out(as_json, done.to_json(), text)
    return ExitStatus.OK


def _account_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = actions(p, "account_command", "ACTION")
    sub.add_parser("show", parents=[common], help="URL, status and contacts, as the CA has them")
    sub.add_parser("rollover", parents=[common], help="replace the account key (keyChange)")
    q = sub.add_parser("deactivate", parents=[common], help="deactivate the account for good")
    q.add_argument("--yes", action="store_true", help="required: this cannot be undone")


def _account(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    from .. import lifecycle

    action = args.account_command
    if action == "deactivate" and not args.yes:
        raise UsageError("account deactivate cannot be undone: add --yes to mean it")
    result = lifecycle.account(need(config), action)
    details = "\n".join(
        f"{k}:" + "".join(f"\n  {x}" for x in v) if isinstance(v, list) and v else f"{k}: {v}"
        for k, v in result.details.items()
    )
    out(as_json, result.to_json(), f"account {action} at {result.directory}\n{details}")
    return ExitStatus.OK


def _config_args(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = actions(p, "config_command", "SUBCOMMAND")
    sub.add_parser("validate", parents=[common], help="parse and check the configuration only")
    sub.add_parser(
        "schema", parents=[common], help="print the configuration's JSON Schema (for editors)"
    )


def _config(args: argparse.Namespace, config: Config | None, as_json: bool) -> ExitStatus:
    """`config schema` needs no configuration; `config validate` loads it."""
    from .. import api

    if args.config_command == "schema":
        from ..configspec import json_schema

        print(json.dumps(json_schema(), indent=2))
        return ExitStatus.OK
    config = api.load_config(getattr(args, "config", None))
    warnings = api.validate(config)
    names = [c.name for c in config.certificates]
    text = [f"{config.source}: valid, {len(names)} certificate(s)"]
    text += [f"warning: {w}" for w in warnings]
    data = {"schema": 1, "valid": True, "source": str(config.source), "certificates": names,
            "warnings": warnings}  # fmt: skip
    out(as_json, data, "\n".join(text))
    return ExitStatus.OK


COMMANDS = (
    Command("backup", "write state and config to one archive", _file, _backup),
    Command(
        "restore",
        "put a backup back (refuses to overwrite without --force)",
        _restore_args,
        _restore,
        needs_config=False,
    ),
    Command(
        "import",
        "take over certbot's or lego's account and certificates (no new issuance)",
        _import_args,
        _import,
    ),
    Command("account", "the ACME account of the configured CA", _account_args, _account),
    Command("config", "configuration commands", _config_args, _config, needs_config=False),
)
