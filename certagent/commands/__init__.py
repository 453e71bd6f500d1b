"""Every command, by group: what it adds to the grammar and its entry (base.Command).

    renewing.py  renew, plan, deploy, rollback, rehearse, receive, revoke
    watching.py  check, health, status, history, metrics
    keeping.py   backup, restore, import, account, config
    output.py    how answers are printed; args.py the grammar's parser and types

A new command is one `Command` in its group's COMMANDS: `cliparser` builds the grammar
from ALL, `cli` runs the entry.
"""

from __future__ import annotations

from . import keeping, renewing, watching
from .base import Command

ORDER = ("renew", "plan", "deploy", "rollback", "rehearse", "check", "health", "receive",
         "status", "history", "metrics", "backup", "restore", "revoke", "import", "account",
         "config")  # the order of --help  # fmt: skip

ALL: tuple[Command, ...] = tuple(
    sorted(
        renewing.COMMANDS + watching.COMMANDS + keeping.COMMANDS, key=lambda c: ORDER.index(c.name)
    )
)
BY_NAME = {c.name: c for c in ALL}
