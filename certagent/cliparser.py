"""The command line's grammar: the options every command has, each command's own (from
`commands`), and the epilog that states the exit codes. `cli` parses with it;
`manpage` renders it.

Imports nothing heavy (argparse, the commands' declarations).
"""

from __future__ import annotations

import argparse

from . import __version__
from .commands import ALL
from .commands.args import Parser
from .errors import MEANING, ExitStatus, PluginStatus

EPILOG = (
    "exit status (a contract for cron and Salt):\n"
    + "".join(f"  {int(s):<3} {MEANING[s]}\n" for s in ExitStatus)
    + "  `check` follows the monitoring-plugin convention: "
    + ", ".join(f"{int(p)} {p.name}" for p in PluginStatus)
    + ".\n  `health` exits 1 unless this node serves valid certificates.\n\n"
    "configuration: -c FILE, else $CERTAGENT_CONFIG, else /etc/certagent/certagent.yaml.\n"
    "`certagent COMMAND --help` describes each command.\n"
)


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="configuration file (default: $CERTAGENT_CONFIG, then /etc/certagent/certagent.yaml)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the report as JSON (schema in the README)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="say more (repeat for debug output)",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print only failures (and what --json asks for)",
    )

    parser = Parser(
        prog="certagent",
        parents=[common],
        description="Renew ACME certificates; stage, rehearse, deploy, verify, roll back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"certagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in ALL:
        command.define(sub.add_parser(command.name, parents=[common], help=command.help), common)
    return parser
