"""The command line's grammar: every command, option and argument type, and the epilog
that states the exit codes. `cli` parses with it; `manpage` renders it.

Imports nothing heavy (argparse and the names of the STARTTLS protocols).
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn

from . import __version__
from .errors import MEANING, ExitStatus, PluginStatus, UsageError
from .starttls import PROTOCOLS as STARTTLS_PROTOCOLS

EPILOG = (
    "exit status (a contract for cron and Salt):\n"
    + "".join(f"  {int(s):<3} {MEANING[s]}\n" for s in ExitStatus)
    + "  `check` follows the monitoring-plugin convention: "
    + ", ".join(f"{int(p)} {p.name}" for p in PluginStatus)
    + ".\n  `health` exits 1 unless this node serves valid certificates.\n\n"
    "configuration: -c FILE, else $CERTAGENT_CONFIG, else /etc/certagent/certagent.yaml.\n"
    "`certagent COMMAND --help` describes each command.\n"
)


class _Parser(argparse.ArgumentParser):
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


def _seconds(limit: float, least: float = 0.0) -> Any:
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


def _days(text: str) -> float:
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


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"expected 1 to 1000000, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
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

    parser = _Parser(
        prog="certagent",
        parents=[common],
        description="Renew ACME certificates; stage, rehearse, deploy, verify, roll back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"certagent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("renew", parents=[common], help="renew what is due (for cron, Salt, people)")
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
        type=_seconds(86400),
        default=0.0,
        metavar="SECONDS",
        help="first wait a random time up to SECONDS (spreads cron runs over many hosts)",
    )
    p.add_argument(
        "--failover-override",
        metavar="REASON",
        help="maintenance: skip the keepalived checks and the peer; deploy here only (logged)",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="certificates (default: all)")

    p = sub.add_parser("plan", parents=[common], help="what renew would do now, and why")
    p.add_argument("--force", action="store_true", help="plan as if --force were given")
    p.add_argument("names", nargs="*", metavar="NAME")

    p = sub.add_parser(
        "deploy",
        parents=[common],
        help="deploy without ordering: the newest certificate issued and not deployed yet, "
        "else the current release again (render, test, hook, verify)",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--failover-override",
        metavar="REASON",
        help="maintenance: skip the keepalived checks and the peer; deploy here only (logged)",
    )

    p = sub.add_parser(
        "rollback", parents=[common], help="re-activate the previous release, reload and verify it"
    )
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser(
        "rehearse",
        parents=[common],
        help="rehearse the whole deploy on the staging CA now (production untouched)",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="certificates (default: all)")

    p = sub.add_parser(
        "check",
        parents=[common],
        help="probe every endpoint; monitoring-plugin output and exit codes (0-3)",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="certificates or monitor endpoints")
    p.add_argument(
        "-w",
        "--warning",
        type=_days,
        metavar="DAYS",
        help="WARNING at or below this many days left (default: monitor.warning_days)",
    )
    p.add_argument(
        "-C",
        "--critical",
        type=_days,
        metavar="DAYS",
        help="CRITICAL at or below this many days left (-c is the config file)",
    )
    p.add_argument(
        "-t",
        "--timeout",
        type=_seconds(600, least=0.01),
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
    p.add_argument("--trust-root", action="append", default=[], metavar="PEM",
                   help="with -H: also trust this root (repeatable)")  # fmt: skip
    p.add_argument("-V", "--plugin-version", action="version",
                   version=f"certagent check {__version__}",
                   help="print the version (a monitoring plugin's -V) and exit")  # fmt: skip

    p = sub.add_parser(
        "health",
        parents=[common],
        help="exit 1 unless this node serves valid certificates (a keepalived vrrp_script)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds(600, least=0.01),
        default=2.0,
        metavar="SECONDS",
        help="per endpoint (default 2)",
    )
    p.add_argument(
        "--instance",
        metavar="NAME",
        help="only the certificates of this keepalived instance (one track script each)",
    )

    p = sub.add_parser(
        "receive",
        parents=[common],
        help="deploy a release handed over on stdin (run by the keepalived MASTER)",
    )
    p.add_argument("names", nargs="+", metavar="NAME")

    p = sub.add_parser("status", parents=[common], help="certificates, expiry, next renewal")
    p.add_argument("names", nargs="*", metavar="NAME")

    p = sub.add_parser("history", parents=[common], help="the audit log: recent runs, newest first")
    p.add_argument("name", nargs="?", metavar="NAME", help="only runs that touched NAME")
    p.add_argument("-n", "--limit", type=_count, default=20, help="how many runs (default 20)")

    sub.add_parser("metrics", parents=[common], help="print the Prometheus metrics")

    p = sub.add_parser("backup", parents=[common], help="write state and config to one archive")
    p.add_argument("file", metavar="FILE", help="the archive to write (tar.gz, mode 0600)")

    p = sub.add_parser(
        "restore", parents=[common], help="put a backup back (refuses to overwrite without --force)"
    )
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

    p = sub.add_parser(
        "revoke", parents=[common], help="revoke NAME's live certificate (renewed next run)"
    )
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

    p = sub.add_parser(
        "import",
        parents=[common],
        help="take over certbot's or lego's account and certificates (no new issuance)",
    )
    p.add_argument("source", choices=["certbot", "lego"])
    p.add_argument("dir", nargs="?", metavar="DIR",
                   help="default: /etc/letsencrypt (certbot), /root/.lego (lego)")  # fmt: skip

    p = sub.add_parser("account", parents=[common], help="the ACME account of the configured CA")
    asub = p.add_subparsers(dest="account_command", metavar="ACTION", parser_class=_Parser)
    asub.required = True
    asub.add_parser("show", parents=[common], help="URL, status and contacts, as the CA has them")
    asub.add_parser("rollover", parents=[common], help="replace the account key (keyChange)")
    q = asub.add_parser("deactivate", parents=[common], help="deactivate the account for good")
    q.add_argument("--yes", action="store_true", help="required: this cannot be undone")

    p = sub.add_parser("config", parents=[common], help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", parser_class=_Parser)
    csub.required = True
    csub.add_parser("validate", parents=[common], help="parse and check the configuration only")
    csub.add_parser(
        "schema", parents=[common], help="print the configuration's JSON Schema (for editors)"
    )
    return parser
