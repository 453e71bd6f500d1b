"""How commands answer on a terminal: a report, the status table, the history, a
progress line (on a terminal only, never in cron), or JSON when asked.

Side effects: writes to stdout/stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

from ..jsontext import Items

if TYPE_CHECKING:  # the model is imported where it is used: --help stays light
    from ..api import StatusRow
    from ..model import Report


def out(as_json: bool, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def print_report(report: Report, verbose: int, quiet: bool = False) -> None:
    from ..model import Outcome

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
            done = "deployed" if report.command in ("deploy", "receive") else "renewed"
            print(
                f"{r.name}: {done} ({r.decision.reason}); release {r.release}, "
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


def print_status(rows: list[StatusRow]) -> None:

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


QUIET_SHOWN = 10  # more certificates than this skipped quietly in a run: one line for them


def print_history(records: Iterable[dict[str, Any]], name: str | None, verbose: int = 0) -> None:
    """Each run as it is read. A run's certificates skipped with nothing to say (not
    due, no step) are one line when there are many (10,000 of them a run), unless
    NAME or -v asks for each."""
    for r in records:
        who, code = r.get("user"), r.get("exit_status")
        lines = [f"{r.get('time')}  {r.get('command')!s:<8} by {who}  exit {code}"]
        quiet = 0
        certs = r.get("certificates")
        for c in certs if isinstance(certs, list | Items) else []:
            if not isinstance(c, dict) or (name and c.get("name") != name):
                continue
            if not (name or verbose) and _quiet(c):
                quiet += 1
                if quiet > QUIET_SHOWN:
                    continue
            what = c.get("error") or c.get("reason")
            lines.append(f"  {c.get('name')}: {c.get('outcome')}: {what}")
            for f in _listed(c.get("files_changed")):
                lines.append(f"    changed {f}")
            for o in _listed(c.get("overrides")):
                if isinstance(o, dict):
                    lines.append(f"    override {o.get('override')}: {o.get('detail')}")
                else:  # recorded by a version before 2026-12
                    lines.append(f"    override: {o}")
        if quiet > QUIET_SHOWN:
            lines.append(f"  ... and {quiet - QUIET_SHOWN} more skipped with nothing to say "
                         "(`certagent history NAME` or -v shows each)")  # fmt: skip
        sys.stdout.write("".join(f"{line}\n" for line in lines))


def _listed(value: object) -> list[Any]:
    """A list the record holds, or none (a damaged or foreign line prints what it can)."""
    return value if isinstance(value, list) else []


def _quiet(c: dict[str, Any]) -> bool:
    """Recorded as a decision only: skipped, no step, no error (wiring.history_record)."""
    return c.get("outcome") == "skipped" and set(c) <= {"name", "outcome", "reason"}


class TerminalProgress:
    """One self-overwriting status line on an interactive terminal; nothing in cron."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def update(self, label: str, what: str) -> None:
        self.stream.write(f"\r\033[K{label}: {what}")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()
