"""The `check` command around the prober (check.py): its targets, its answer, its record.

`check` derives its targets from the configuration itself (every certificate's
endpoints and the monitor endpoints, so the monitor never covers only a subset),
probes them concurrently and answers as a monitoring plugin; a full check leaves its
findings for the metrics. (`health`, the keepalived track script, is in health.py.)

Side effects: network (probes); reads the store; writes `check.json` and the metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import kept as kept_mod
from . import trust
from .check import Checker, Finding, State, Target, Watcher, plugin_output, watch
from .errors import StoreError, UsageError
from .jsontext import write_compact
from .model import Config, Endpoint, Monitor, iso
from .store import Store, replacing
from .system import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckReport:
    state: State
    text: str  # monitoring-plugin output: summary line with perfdata, then one line each
    findings: tuple[Finding, ...]
    watcher: Watcher | None
    checked_at: dt.datetime

    def to_json(self, lazy: bool = False) -> dict[str, object]:
        """`lazy`: the endpoints as an iterator, each made as jsontext writes it."""
        endpoints = (f.to_json() for f in self.findings)
        return {
            "schema": 1,
            "command": "check",
            "checked_at": iso(self.checked_at),
            "state": self.state.name,
            "exit_status": int(self.state),
            "summary": self.text.split("\n", 1)[0],
            "renew": self.watcher.to_json() if self.watcher else None,
            "endpoints": endpoints if lazy else list(endpoints),
        }


@dataclass(frozen=True)
class Thresholds:
    """Command-line overrides of the configured thresholds (`check -w/-C/-t`)."""

    warning_days: float | None = None
    critical_days: float | None = None
    timeout: float | None = None

    def apply(self, target: Target) -> Target:
        return replace(
            target,
            warning_days=target.warning_days if self.warning_days is None else self.warning_days,
            critical_days=(
                target.critical_days if self.critical_days is None else self.critical_days
            ),
        )


def check(
    config: Config,
    names: Sequence[str] = (),
    *,
    clock: Clock | None = None,
    thresholds: Thresholds = Thresholds(),
) -> CheckReport:
    """Probe every configured certificate's endpoints and every monitor endpoint, at once.

    Reads the store (current releases, the last renew run) and never locks it. A full
    check (no names, no overrides) that finds a state directory it may write leaves its
    findings there (`check.json`) for the metrics, and rewrites the metrics textfile if
    one is set. A user who cannot read the store still gets every endpoint probed.
    """
    now = (clock or SystemClock()).now()
    targets = [thresholds.apply(t) for t in check_targets(config, names)]
    findings = Checker(thresholds.timeout or config.monitor.timeout, now).check_all(targets)
    findings += unwatched(config, names)
    watcher = None
    if config.monitor.max_renew_age is not None and not names:
        try:
            record = Store(config.state_dir).last_runs().get("renew")
        except (StoreError, OSError) as exc:
            watcher = Watcher(State.UNKNOWN, f"cannot read the history: {exc}", None, None,
                              config.monitor.max_renew_age)  # fmt: skip
        else:
            last = dt.datetime.fromisoformat(str(record["time"])) if record else None
            watcher = watch(last, config.monitor.max_renew_age, now)
    state, text = plugin_output(findings, watcher)
    report = CheckReport(state, text, tuple(findings), watcher, now)
    full = not names and thresholds == Thresholds()
    if full and _writable_state(config.state_dir):
        _record_check(config, report)
    return report


def check_endpoint(
    endpoint: Endpoint,
    *,
    starttls: str | None = None,
    trust_roots: Sequence[Path] = (),
    thresholds: Thresholds = Thresholds(),
    clock: Clock | None = None,
) -> CheckReport:
    """One endpoint given on the command line (`check -H host[:port]`): no configuration
    is needed; the defaults are the `monitor` section's."""
    now = (clock or SystemClock()).now()
    d = Monitor()
    label = f"{endpoint.host}:{endpoint.port}"
    roots = tuple(trust_roots)
    target = Target(label, endpoint, d.warning_days, d.critical_days, roots, starttls=starttls)
    target = thresholds.apply(target)
    findings = Checker(thresholds.timeout or d.timeout, now).check_all([target])
    state, text = plugin_output(findings, None)
    return CheckReport(state, text, tuple(findings), None, now)


def unwatched(config: Config, names: Sequence[str] = ()) -> list[Finding]:
    """Deployed certificates with `endpoints: none`: UNKNOWN, never silently OK."""
    out = []
    for spec in config.certificates:
        if names and spec.name not in names:
            continue
        if spec.deploy is not None and spec.deploy.unwatched is not None:
            target = Target(f"{spec.name} (unwatched)", Endpoint("-", 0, "-"), 0, 0,
                            certificate=spec.name)  # fmt: skip
            why = f"not watched: {spec.deploy.unwatched} (deploy.endpoints: none)"
            out.append(Finding(target, State.UNKNOWN, why))
    return out


def _writable_state(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK) and trust.problem(folder) is None


def _record_check(config: Config, report: CheckReport) -> None:
    from . import metrics  # deferred like in _finish

    try:
        path = config.state_dir / metrics.CHECK_FILE  # 10,000 endpoints: ~5 MB, streamed
        with replacing(path) as fd, open(fd, "w", encoding="utf-8", closefd=False) as out:
            write_compact(report.to_json(lazy=True), out.write)
        if config.metrics_textfile is not None:
            metrics.write(config, config.metrics_textfile)
    except OSError as exc:  # monitoring output must not depend on it
        log.warning("cannot record the check results: %s", exc)


def check_targets(config: Config, names: Sequence[str] = ()) -> list[Target]:
    """Every certificate's endpoints (its deploy endpoints, else each name on 443) and
    every `monitor.endpoints` entry: derived from the config, so there is no second list."""
    monitor = config.monitor
    known = {c.name for c in config.certificates} | {e.name for e in monitor.endpoints}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown certificate or monitor endpoint(s) {', '.join(unknown)} in {config.source}"
        )
    store = Store(config.state_dir, config.state_group)
    targets = []
    for spec in config.certificates:
        if names and spec.name not in names:
            continue
        if spec.deploy is not None:
            endpoints = spec.deploy.endpoints
            roots = spec.deploy.trust_roots + monitor.trust_roots
        else:
            endpoints = tuple(Endpoint(n, 443, n) for n in spec.names if not n.startswith("*."))
            roots = monitor.trust_roots
        if not endpoints:  # `endpoints: none` (said by `unwatched`) or wildcards only
            continue
        try:
            snap = store.snapshot(spec.name)
        except OSError:  # a monitoring user without access to the store: probe anyway
            snap = None
        current = snap.current if snap else None
        try:
            kept = snap and kept_mod.undeployed(store, spec, snap.state, config.directories)
        except (OSError, StoreError):  # unreadable for this user: the probe still says a lot
            kept = None
        for ep in endpoints:
            targets.append(
                Target(
                    f"{spec.name} {ep.host}:{ep.port}",
                    ep,
                    monitor.warning_days,
                    monitor.critical_days,
                    roots,
                    starttls=ep.starttls,
                    certificate=spec.name,
                    expected=current.fingerprint_sha256 if current else None,
                    damaged=snap.damaged if snap else None,
                    undeployed=kept.describe(spec.name) if kept else None,
                    fallback=current.fallback_note(config.ca.directory) if current else None,
                    warning_share=monitor.warning_share,
                    critical_share=monitor.critical_share,
                )
            )
    for m in monitor.endpoints:
        if names and m.name not in names:
            continue
        targets.append(
            Target(
                m.name,
                m.endpoint,
                monitor.warning_days if m.warning_days is None else m.warning_days,
                monitor.critical_days if m.critical_days is None else m.critical_days,
                m.trust_roots + monitor.trust_roots,
                starttls=m.starttls,
                warning_share=monitor.warning_share,
                critical_share=monitor.critical_share,
            )
        )
    return targets
