"""Prometheus text-format metrics, derived from the store (state files, releases, history).

The same text is printed by `certagent metrics` and written atomically to
`metrics.textfile` after every run (for node_exporter's textfile collector).

Side effects: reads the store; `write` writes one file atomically.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from . import __version__, castate
from . import kept as kept_mod
from .errors import StoreError
from .jsontext import Items, dumped, lazy_object
from .model import Config, Outcome
from .store import Store, replacing
from .store import rehearsal as rehearsal_record
from .store.atomic import write_all

SAMPLE_DEPTH = 4  # in the JSON document: metrics[i].samples[j]
CHECK_FILE = "check.json"  # the last full `certagent check`, written by api.check
COMMANDS = ("renew", "deploy", "rollback", "rehearse")


class _Spill:
    """Where the families' text waits to be printed: in memory up to HELD characters
    in all, then in one unnamed temporary file (0600, gone when closed), read back a
    chunk at a time. 10,000 certificates make 160,000 samples, 12 MB of text (21 MB
    as JSON): a large host's metrics stay near the size of its configuration."""

    HELD = 4 << 20

    def __init__(self) -> None:
        self.held = 0
        self._file: IO[bytes] | None = None

    def keep(self, text: str) -> str | tuple[int, int]:
        """`text`, or where it was set aside (offset, length in bytes)."""
        if self.held + len(text) <= self.HELD:
            self.held += len(text)
            return text
        data = text.encode()
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="certagent-metrics-")  # noqa: SIM115 - close()
            at = self._file.seek(0, os.SEEK_END)
            self._file.write(data)
        except OSError:  # no room for a scratch file: kept in memory, as before
            return text
        return at, len(data)

    def text(self, chunk: str | tuple[int, int]) -> str:
        if isinstance(chunk, str):
            return chunk
        assert self._file is not None  # noqa: S101 - set aside there by keep()
        self._file.seek(chunk[0])
        return self._file.read(chunk[1]).decode()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Family:
    """One metric's samples, kept as the text they will be printed as, joined a
    thousand lines at a time and given to the run's spill (which may set them aside in
    a scratch file until they are printed). `as_json`: each sample as the JSON object
    `certagent --json metrics` prints (schemas/metrics.schema.json), else as a line of
    the Prometheus exposition."""

    def __init__(
        self,
        name: str,
        kind: str,
        help_text: str,
        as_json: bool = False,
        spill: _Spill | None = None,
    ) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.as_json = as_json
        self.spill = spill or _Spill()
        self.chunks: list[str | tuple[int, int]] = []
        self.lines: list[str] = []
        self.count = 0

    def add(self, labels: dict[str, str], value: float) -> None:
        self.count += 1
        if self.as_json:  # laid out as json.dumps(indent=2) lays out the whole document
            sample = dumped({"labels": labels, "value": value}, SAMPLE_DEPTH)
            self.lines.append(f"{',' if self.count > 1 else ''}\n{' ' * 2 * SAMPLE_DEPTH}{sample}")
        else:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{self.name}{{{inner}}} {_number(value)}\n" if inner else
                              f"{self.name} {_number(value)}\n")  # fmt: skip
        if len(self.lines) >= 1000:
            self.chunks.append(self.spill.keep("".join(self.lines)))
            self.lines = []

    def render(self) -> Iterator[str]:
        if not self.count:
            return
        if self.as_json:
            head = {"name": self.name, "type": self.kind, "help": self.help}
            yield "".join(f"\n      {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items())
            yield '\n      "samples": ['
        else:
            yield f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        yield from map(self.spill.text, self.chunks)
        yield "".join(self.lines)
        if self.as_json:
            yield "\n      ]"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"


def _ts(value: dt.datetime) -> float:
    return round(value.timestamp(), 3)


def render(config: Config) -> str:
    """The Prometheus text exposition of every family that has samples."""
    out = io.StringIO()
    emit(config, out.write)
    return out.getvalue()


def emit(config: Config, write: Callable[[str], object]) -> None:
    """The exposition, a family at a time (what it holds is the text, once)."""
    spill = _Spill()
    try:
        for family in families(config, spill=spill):
            for text in family.render():
                write(text)
    finally:
        spill.close()


def emit_json(config: Config, write: Callable[[str], object]) -> None:
    """`certagent --json metrics` (schemas/metrics.schema.json), a family at a time
    like the text: the same bytes as json.dumps(document, indent=2), never the whole
    document in memory."""
    write('{\n  "schema": 1,\n  "metrics": [')
    count = 0
    spill = _Spill()
    try:
        for family in families(config, as_json=True, spill=spill):
            if not family.count:
                continue
            write(("," if count else "") + "\n    {")
            for text in family.render():
                write(text)
            write("\n    }")
            count += 1
    finally:
        spill.close()
    write("\n  ]\n}\n" if count else "]\n}\n")


def to_json(config: Config) -> dict[str, Any]:
    """The same, as a document (Python callers; `emit_json` prints it)."""
    out = io.StringIO()
    emit_json(config, out.write)
    document: dict[str, Any] = json.loads(out.getvalue())
    return document


def families(config: Config, as_json: bool = False, spill: _Spill | None = None) -> list[_Family]:
    """Every family with its samples, as JSON (`as_json`) or as text; their text waits
    in `spill` (the caller closes it once they are printed)."""
    store = Store(config.state_dir)
    spill = spill or _Spill()
    f = {
        name: _Family(name, kind, text, as_json, spill)
        for name, kind, text in (
            ("certagent_certificate_not_after_timestamp_seconds", "gauge",
             "Not-after of the current release (Unix time)."),
            ("certagent_certificate_not_before_timestamp_seconds", "gauge",
             "Not-before of the current release (Unix time): with not-after, its lifetime."),
            ("certagent_certificate_last_success_timestamp_seconds", "gauge",
             "When a renewal or deploy last succeeded (Unix time)."),
            ("certagent_certificate_last_attempt_timestamp_seconds", "gauge",
             "When a renewal or deploy was last attempted (Unix time)."),
            ("certagent_certificate_last_outcome", "gauge",
             "1 for the outcome of the last attempt, 0 for the others."),
            ("certagent_certificate_attempts_total", "counter",
             "Renewal and deploy attempts (not skipped runs)."),
            ("certagent_certificate_failures_total", "counter",
             "Attempts that did not end renewed."),
            ("certagent_certificate_consecutive_failures", "gauge",
             "Failed attempts since the last success."),
            ("certagent_certificate_gate_refusals_total", "counter",
             "Swaps refused by a gate (staging rehearsal, preflight)."),
            ("certagent_certificate_verify_ok", "gauge",
             "1 if the last verify of the served certificate passed, 0 if it failed."),
            ("certagent_rehearsal_last_pass_timestamp_seconds", "gauge",
             "When the staging rehearsal last passed (Unix time)."),
            ("certagent_last_run_timestamp_seconds", "gauge",
             "When the last run of each command finished (Unix time)."),
            ("certagent_last_run_exit_status", "gauge",
             "Exit status of the last run of each command."),
            ("certagent_endpoint_check_state", "gauge",
             "Last `certagent check` state per endpoint: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."),
            ("certagent_endpoint_not_after_timestamp_seconds", "gauge",
             "Not-after of the certificate an endpoint served at the last check (Unix time)."),
            ("certagent_check_timestamp_seconds", "gauge",
             "When the last full `certagent check` ran (Unix time)."),
            ("certagent_build_info", "gauge", "1, labelled with certagent's version."),
            ("certagent_certificate_undeployed", "gauge",
             "1 while a certificate issued for it waits to be deployed (its deploy failed)."),
            ("certagent_ca_hold_until_timestamp_seconds", "gauge",
             "Until when the CA asked every client to wait (Retry-After; Unix time)."),
            ("certagent_ca_breaker_open", "gauge",
             "1 while the CA's circuit breaker is open (repeated 5xx or no answer)."),
            ("certagent_endpoint_serves_live", "gauge",
             "1 if the endpoint served the live release at the last check, 0 if another."),
        )
    }  # fmt: skip
    f["certagent_build_info"].add({"version": __version__}, 1)
    now = dt.datetime.now(dt.UTC)
    for ca in config.directories:  # each CA's word, kept beside its account
        hold = kept_mod.ca_hold(store, (ca,), now)
        if hold is not None:
            f["certagent_ca_hold_until_timestamp_seconds"].add({"ca": ca}, _ts(hold[0]))
        broken = castate.breaker_open(store.account_path(ca)) is not None
        f["certagent_ca_breaker_open"].add({"ca": ca}, int(broken))
    staging = Store(config.staging.state_dir) if config.staging else None
    for spec in config.certificates:
        label = {"certificate": spec.name}
        snap = store.snapshot(spec.name)  # a damaged state file shows as no data, not a crash
        current, state = snap.current, snap.state
        if current is not None:
            f["certagent_certificate_not_after_timestamp_seconds"].add(
                label, _ts(current.not_after)
            )
            f["certagent_certificate_not_before_timestamp_seconds"].add(
                label, _ts(current.not_before)
            )
        if state.last_success is not None:
            f["certagent_certificate_last_success_timestamp_seconds"].add(
                label, _ts(state.last_success)
            )
        if state.last_attempt is not None:
            f["certagent_certificate_last_attempt_timestamp_seconds"].add(
                label, _ts(state.last_attempt)
            )
        if state.last_outcome is not None:
            for outcome in Outcome:
                f["certagent_certificate_last_outcome"].add(
                    {**label, "outcome": outcome.value}, int(outcome.value == state.last_outcome)
                )
        f["certagent_certificate_attempts_total"].add(label, state.attempts)
        f["certagent_certificate_failures_total"].add(label, state.failures)
        f["certagent_certificate_consecutive_failures"].add(label, state.consecutive_failures)
        f["certagent_certificate_gate_refusals_total"].add(label, state.refusals)
        if state.verify_ok is not None:
            f["certagent_certificate_verify_ok"].add(label, int(state.verify_ok))
        try:
            waiting = kept_mod.undeployed(store, spec, state, config.directories) is not None
        except (OSError, StoreError):  # a reader without access: no data, not a crash
            waiting = False
        f["certagent_certificate_undeployed"].add(label, int(waiting))
        memo = rehearsal_record.read(staging, spec.name) if staging and spec.staging else None
        if memo is not None:
            f["certagent_rehearsal_last_pass_timestamp_seconds"].add(label, _ts(memo[1]))
    runs = store.last_runs()
    for command, record in ((c, runs[c]) for c in COMMANDS if c in runs):
        finished = dt.datetime.fromisoformat(str(record["time"]))
        f["certagent_last_run_timestamp_seconds"].add({"command": command}, _ts(finished))
        f["certagent_last_run_exit_status"].add(
            {"command": command}, int(str(record.get("exit_status", 0)))
        )
    checked = _last_check(config.state_dir / CHECK_FILE)
    if checked is not None:
        f["certagent_check_timestamp_seconds"].add({}, _ts(checked[0]))
        for e in checked[1]:
            label = {
                "endpoint": str(e.get("label")),
                "certificate": str(e.get("certificate") or ""),
                "address": f"{e.get('host')}:{e.get('port')}",  # the label, split out
            }
            f["certagent_endpoint_check_state"].add(label, _STATES.get(str(e.get("state")), 3))
            if isinstance(e.get("current_release"), bool):
                f["certagent_endpoint_serves_live"].add(label, int(e["current_release"]))
            not_after = _parse_time(e.get("not_after"))
            if not_after is not None:
                f["certagent_endpoint_not_after_timestamp_seconds"].add(label, _ts(not_after))
    return list(f.values())


def _parse_time(value: object) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


_STATES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def _last_check(path: Path) -> tuple[dt.datetime, Iterator[dict[str, Any]]] | None:
    """The last full check's time and endpoints, decoded one at a time (10,000 endpoints
    are 5 MB of text, 40 MB once decoded)."""
    try:
        raw = lazy_object(path.read_text(encoding="utf-8"), "endpoints")
        endpoints = raw["endpoints"]
        if not isinstance(endpoints, Items | list):
            return None
        return dt.datetime.fromisoformat(raw["checked_at"]), (
            e for e in endpoints if isinstance(e, dict)
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None  # none yet, or unreadable: no check metrics rather than wrong ones


def write(config: Config, path: Path) -> None:
    """The textfile for node_exporter, whole or not at all, written as it is made."""
    with replacing(path, 0o644) as fd:
        emit(config, lambda text: write_all(fd, text.encode()))
