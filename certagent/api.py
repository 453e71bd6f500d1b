"""Public entry points (renew, plan, status) and the composition root.

The CLI, the Salt modules and Python callers all come through here and get the
same `Report`. The ACME adapter is imported only when a run needs it, so that
`certagent --help` and `certagent status` never import `acme` or `josepy`.

Side effects: filesystem (state dir), network (through the issuer).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as config_mod
from . import pipeline, plan, system, trust
from .challenges import Solvers
from .check import Checker, Finding, State, Target, Watcher, plugin_output, watch
from .deploy import Deployer, Steps
from .errors import CertagentError, ExitStatus, GateRefused, StoreError, UsageError
from .model import (
    CASpec,
    CertResult,
    CertSpec,
    Config,
    Decision,
    DeploySpec,
    Endpoint,
    Monitor,
    Outcome,
    Report,
    iso,
)
from .pipeline import Context, Issuer, Progress
from .store import Store, atomic_write, make_private_dir
from .system import Clock, SystemClock
from .verify import TlsProber

if TYPE_CHECKING:
    from .acme_issuer import AcmeIssuer
    from .failover import Failover
    from .rehearse import Rehearsal

log = logging.getLogger(__name__)

_SEVERITY = {
    Outcome.SKIPPED: ExitStatus.OK,
    Outcome.RENEWED: ExitStatus.OK,
    Outcome.REVOKED: ExitStatus.OK,
    Outcome.FAILED_BEFORE_SWAP: ExitStatus.FAILED,
    Outcome.ROLLED_BACK: ExitStatus.ROLLED_BACK,
    Outcome.BROKEN: ExitStatus.BROKEN,
}


def validate(config: Config) -> None:
    """`config validate` beyond parsing: what would make an issued certificate unusable
    (templates that are missing, broken or use an undefined variable, destination
    directories and webroots that do not exist), as ConfigError (exit 78)."""
    from .errors import ConfigError, ConfigProblem

    store = Store(config.state_dir)
    problems = []
    for spec in config.certificates:
        for problem in pipeline.precheck(spec, config.template_dirs, store):
            problems.append(ConfigProblem(f"certificates.{spec.name}", problem))
    if problems:
        raise ConfigError(str(config.source), problems)


def load_config(path: str | None = None) -> Config:
    """-c, then $CERTAGENT_CONFIG, then /etc/certagent/certagent.yaml."""
    return config_mod.load(config_mod.default_path(path, dict(os.environ)))


def renew(
    config: Config,
    names: Sequence[str] = (),
    force: bool = False,
    *,
    clock: Clock | None = None,
    issuer: Issuer | None = None,
    staging_issuer: Issuer | None = None,
    progress: Progress | None = None,
    failover_override: str | None = None,
) -> Report:
    """Renew what is due (or everything named, with force). One run at a time (exit 75).

    With a staging CA configured, each due certificate is rehearsed there first
    (unless an identical setup passed recently); a failed rehearsal stops it. On a
    keepalived node only the MASTER orders, and only when its BACKUP is ready; the
    backup gets the release first (`failover_override`, a reason, skips all that).
    """
    specs = select(config, names)
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        solvers = Solvers()
        ctx = _context(
            config,
            store,
            issuer or acme_issuer(config.ca, config, store, clock),
            solvers,
            clock,
            failover=_failover(config, failover_override),
        )
        ctx.rehearse = _rehearsal(config, solvers, clock, staging_issuer)
        try:
            results = []
            for i, spec in enumerate(specs, 1):
                if progress is not None:
                    ctx.progress = _labelled(progress, f"[{i}/{len(specs)}] {spec.name}")
                    ctx.progress(spec.name, "planning")
                try:
                    results.append(pipeline.renew_one(ctx, spec, force))
                except Exception as exc:  # this certificate's failure; the others go on
                    results.append(pipeline.failed(ctx, spec, exc))
        finally:
            solvers.close()
        report = Report("renew", started, clock.now(), tuple(results))
        finish(config, store, report, clock)
    return report


def deploy(
    config: Config,
    name: str,
    *,
    clock: Clock | None = None,
    failover_override: str | None = None,
) -> Report:
    """Deploy the current release again (fresh render, test, hook, verify) without ordering.
    On a keepalived MASTER, the peer first, as in `renew`."""
    spec = select(config, [name])[0]
    if spec.deploy is None:
        raise UsageError(f"certificate {name} has no deploy section in {config.source}")
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        current = store.current(name)
        if current is None:
            raise UsageError(f"certificate {name} has no release yet; run `certagent renew {name}`")
        solvers = Solvers()
        failover = _failover(config, failover_override)
        ctx = _context(config, store, None, solvers, clock, failover=failover)
        ctx.rehearse = _rehearsal(config, solvers, clock)
        decision = Decision(True, f"deploy of release {current.release_id} requested")
        attempt = pipeline.Attempt.begin(ctx, spec, decision)
        state = store.read_state(name)
        try:
            if ctx.failover is not None:  # as in renew, but a BACKUP is refused, not skipped
                with attempt.steps.step("failover") as notes:
                    backup = ctx.failover.may_order(spec)
                    if backup is not None:
                        raise GateRefused(f"{backup}: run `certagent deploy` on the MASTER")
                    notes.append("this node is MASTER and the peer is ready")
            pipeline.rehearsed(ctx, spec, attempt.steps)
            release = pipeline.restage(ctx, spec, current, attempt.steps)
        except CertagentError as exc:
            result = attempt.record(Outcome.FAILED_BEFORE_SWAP, state, current, exc)
        else:
            result = pipeline.apply(attempt, release, current, state)
        finally:
            solvers.close()
        report = Report("deploy", started, clock.now(), (result,))
        finish(config, store, report, clock)
    return report


def receive(config: Config, name: str, payload: bytes, *, clock: Clock | None = None) -> Report:
    """The peer's side of a failover rollout: the MASTER hands over a release (key and
    chain, as JSON on stdin) and this node deploys it with its own config test, hook and
    checks, rolling itself back if they fail. Nothing is ordered here."""
    from . import crypto
    from .failover import MAX_PAYLOAD, PAYLOAD_SCHEMA

    spec = select(config, [name])[0]
    if spec.deploy is None:
        raise UsageError(f"certificate {name} has no deploy section in {config.source}")
    if len(payload) > MAX_PAYLOAD:
        raise UsageError(f"receive: more than {MAX_PAYLOAD} bytes on stdin: not a release")
    try:
        data = json.loads(payload)
        ok = isinstance(data, dict) and data.get("schema") == PAYLOAD_SCHEMA
        if not ok or data.get("name") != name:
            raise ValueError(f"expected a schema-{PAYLOAD_SCHEMA} release of {name}")
        key = crypto.load_key(str(data["key"]).encode())
        fullchain = str(data["fullchain"]).encode()
        source, ca = str(data.get("release", "?")), str(data.get("ca", ""))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"receive: stdin is not a release from certagent: {exc}") from None
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        failover = _failover(config, None)
        ctx = _context(config, store, None, Solvers(), clock, failover=failover, master=False)
        current = store.current(name)
        state = store.read_state(name)
        decision = Decision(True, f"release {source} handed over by the keepalived MASTER")
        attempt = pipeline.Attempt.begin(ctx, spec, decision)
        try:
            with attempt.steps.step("stage", f"from {source}") as notes:
                release = pipeline.stage(ctx, spec, key, fullchain, ca)
                notes.append(f"release {release.release_id}")
        except CertagentError as exc:
            result = attempt.record(Outcome.FAILED_BEFORE_SWAP, state, current, exc)
        else:
            result = pipeline.apply(attempt, release, current, state)
        report = Report("receive", started, clock.now(), (result,))
        finish(config, store, report, clock)
    return report


@dataclass(frozen=True)
class Health:
    ok: bool
    lines: tuple[str, ...]


def health(config: Config, timeout: float = 2.0) -> Health:
    """Does this node's web server serve a valid certificate for every name it should?

    For a keepalived `vrrp_script`: every deploy endpoint is probed on this node's own
    address (`failover.keepalived.address`; without failover, as configured), with
    the chain, the name and the dates verified. Reads nothing from the state dir, takes
    no lock, so it answers while a renewal runs.
    """
    from .verify import on_address, probe, trust_context

    lines, ok = [], True
    for spec in config.certificates:
        if spec.deploy is None or not spec.deploy.endpoints:
            continue
        ctx = trust_context(spec.deploy.trust_roots)
        targets = spec.deploy.endpoints
        if config.failover is not None:
            targets = on_address(targets, config.failover.address)
        for target in targets:
            served = probe(target, ctx, timeout)
            ok = ok and served.fingerprint is not None
            verdict = f"OK {served.fingerprint[:16]}…" if served.fingerprint else served.error
            lines.append(f"{spec.name} {target}: {verdict}")
    if not lines:
        ok = False  # a health check that checks nothing must not pass
        lines.append(f"no deploy endpoints configured in {config.source}: nothing to check")
    return Health(ok, tuple(lines))


def rollback(config: Config, name: str, *, clock: Clock | None = None) -> Report:
    """Re-activate the release that was current before this one, reload and verify it."""
    spec = select(config, [name])[0]
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        current = store.current(name)
        state = store.read_state(name)
        target = store.find(name, state.previous_release)
        if current is None or target is None:
            raise UsageError(f"certificate {name} has no previous release to roll back to")
        steps = Steps(clock)
        decision = Decision(
            True, f"rollback from {current.release_id} to {target.release_id} requested"
        )
        if spec.deploy is None:
            with steps.step("rollback", f"current -> {target.release_id}"):
                store.activate(name, target.release_id)
            outcome = Outcome.ROLLED_BACK
        else:
            # on a keepalived node, verified on this node's own address: not the VIP
            failover = _failover(config, None)
            ctx = _context(config, store, None, Solvers(), clock, failover=failover, master=False)
            outcome, state = ctx.deployer.rollback(spec, current, target, state, steps)
        # A rollback by hand is a decision: do not redeploy the release automatically.
        state = replace(
            state,
            failed_release=None,
            previous_release=None,
            pending=None,
            last_outcome=outcome.value,
            last_attempt=started,
        )
        store.write_state(name, state)
        live = store.current(name)
        error = next((s.detail for s in steps.results if not s.ok), None)
        result = CertResult(
            name,
            outcome,
            decision,
            tuple(steps.results),
            live.release_id if live else None,
            live.not_after if live else None,
            error,
        )
        report = Report("rollback", started, clock.now(), (result,))
        finish(config, store, report, clock)
    return report


def rehearse(
    config: Config,
    names: Sequence[str] = (),
    *,
    clock: Clock | None = None,
    staging_issuer: Issuer | None = None,
    progress: Progress | None = None,
) -> Report:
    """Rehearse each selected certificate on the staging CA now, remembered or not.

    Production is never locked, ordered or touched; the staging state directory is.
    """
    if config.staging is None:
        raise UsageError(f"no staging CA is configured in {config.source} (top-level 'staging')")
    specs = select(config, names)
    clock = clock or SystemClock()
    started = clock.now()
    solvers = Solvers()
    try:
        rehearsal = _rehearsal(config, solvers, clock, staging_issuer)
        assert rehearsal is not None  # noqa: S101 - config.staging is set
        results = []
        for spec in specs:
            if spec.staging is None:
                reason = "no staging target configured (staging: false, or no deploy section)"
                results.append(CertResult(spec.name, Outcome.SKIPPED, Decision(False, reason)))
                continue
            if progress is not None:
                progress(spec.name, "rehearsing on the staging CA")
            results.append(rehearsal.run(spec))
    finally:
        solvers.close()
    report = Report("rehearse", started, clock.now(), tuple(results))
    Store(config.staging.state_dir).append_history(_history_record(report, config))
    return report


@dataclass(frozen=True)
class CheckReport:
    state: State
    text: str  # monitoring-plugin output: summary line with perfdata, then one line each
    findings: tuple[Finding, ...]
    watcher: Watcher | None
    checked_at: dt.datetime

    def to_json(self) -> dict[str, object]:
        return {
            "schema": 1,
            "command": "check",
            "checked_at": iso(self.checked_at),
            "state": self.state.name,
            "exit_status": int(self.state),
            "summary": self.text.split("\n", 1)[0],
            "renew": self.watcher.to_json() if self.watcher else None,
            "endpoints": [f.to_json() for f in self.findings],
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
    watcher = None
    if config.monitor.max_renew_age is not None and not names:
        try:
            record = Store(config.state_dir).last_record("renew")
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


def _writable_state(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK) and trust.problem(folder) is None


def _record_check(config: Config, report: CheckReport) -> None:
    from . import metrics  # deferred like in _finish

    try:
        atomic_write(config.state_dir / metrics.CHECK_FILE, json.dumps(report.to_json()).encode())
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
        try:
            snap = store.snapshot(spec.name)
        except OSError:  # a monitoring user without access to the store: probe anyway
            snap = None
        current = snap.current if snap else None
        for ep in endpoints:
            targets.append(
                Target(
                    f"{spec.name} {ep.host}:{ep.port}",
                    ep,
                    monitor.warning_days,
                    monitor.critical_days,
                    roots,
                    certificate=spec.name,
                    expected=current.fingerprint_sha256 if current else None,
                    damaged=snap.damaged if snap else None,
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
            )
        )
    return targets


def history(config: Config, name: str | None = None, limit: int = 20) -> list[dict[str, object]]:
    """The newest `limit` audit records (those that touched `name`, if given)."""
    if name is not None:
        select(config, [name])
    out: list[dict[str, object]] = []
    for record in Store(config.state_dir).history_backwards():
        certs = record.get("certificates")
        touched = isinstance(certs, list) and any(
            isinstance(c, dict) and c.get("name") == name for c in certs
        )
        if name is None or touched:
            out.append(record)
            if len(out) >= limit:
                break
    return out


def splay(seconds: float) -> None:
    """Sleep a random time up to `seconds`, so that many hosts' cron runs do not align."""
    import random
    import time

    time.sleep(random.uniform(0, seconds))  # noqa: S311 - spreading load, not a secret


def plan_run(
    config: Config, names: Sequence[str] = (), force: bool = False, *, clock: Clock | None = None
) -> Report:
    """What `renew` would do now, and why. Reads the store; writes nothing; no network."""
    specs = select(config, names)
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    now = clock.now()
    results = []
    for spec in specs:
        snap = store.snapshot(spec.name)
        current = snap.current
        decision = plan.decide(spec, current, snap.state, config.policy, now, force, snap.damaged)
        if snap.problems:  # what renew will repair first, said where the operator looks
            decision = replace(decision, reason=f"{decision.reason} ({'; '.join(snap.problems)})")
        results.append(
            CertResult(
                spec.name,
                Outcome.RENEWED if decision.due else Outcome.SKIPPED,
                decision,
                release=current.release_id if current else None,
                not_after=current.not_after if current else None,
            )
        )
    return Report("plan", now, clock.now(), tuple(results))


@dataclass(frozen=True)
class StatusRow:
    name: str
    names: tuple[str, ...]
    release: str | None
    not_after: dt.datetime | None
    days_left: float | None
    next_renewal: dt.datetime | None
    last_outcome: str | None
    due: bool
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "names": list(self.names),
            "release": self.release,
            "not_after": iso(self.not_after),
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "next_renewal": iso(self.next_renewal),
            "last_outcome": self.last_outcome,
            "due": self.due,
            "reason": self.reason,
        }


def status(
    config: Config, names: Sequence[str] = (), *, clock: Clock | None = None
) -> list[StatusRow]:
    now = (clock or SystemClock()).now()
    store = Store(config.state_dir, config.state_group)
    rows = []
    for spec in select(config, names):
        snap = store.snapshot(spec.name)
        current, state = snap.current, snap.state
        decision = plan.decide(spec, current, state, config.policy, now, False, snap.damaged)
        reason = decision.reason
        if snap.problems:
            reason = f"{reason} ({'; '.join(snap.problems)})"
        rows.append(
            StatusRow(
                name=spec.name,
                names=spec.names,
                release=current.release_id if current else None,
                not_after=current.not_after if current else None,
                days_left=(current.not_after - now).total_seconds() / 86400 if current else None,
                next_renewal=decision.renew_at,
                last_outcome=state.last_outcome,
                due=decision.due,
                reason=reason,
            )
        )
    return rows


def _labelled(progress: Progress, label: str) -> Progress:
    def report(_name: str, what: str) -> None:
        progress(label, what)

    return report


def exit_status(report: Report) -> ExitStatus:
    if report.command == "rehearse":  # staging's own rollback is not production's exit 2
        ok = all(r.outcome in (Outcome.RENEWED, Outcome.SKIPPED) for r in report.results)
        return ExitStatus.OK if ok else ExitStatus.FAILED
    if report.command == "rollback":  # asked for and done: the old certificate is serving
        outcome = report.results[0].outcome if report.results else Outcome.ROLLED_BACK
        return ExitStatus.OK if outcome is Outcome.ROLLED_BACK else _SEVERITY[outcome]
    return max((_SEVERITY[r.outcome] for r in report.results), default=ExitStatus.OK)


def select(config: Config, names: Sequence[str]) -> tuple[CertSpec, ...]:
    if not names:
        return config.certificates
    unknown = [n for n in names if config.certificate(n) is None]
    if unknown:
        known = [c.name for c in config.certificates]
        hints = [h for h in (_hint(config, n) for n in unknown) if h]
        raise UsageError(
            f"unknown certificate(s) {', '.join(unknown)} in {config.source} "
            f"(configured: {', '.join(known)})" + "".join(f"; {h}" for h in hints)
        )
    return tuple(c for c in config.certificates if c.name in names)


def _hint(config: Config, name: str) -> str | None:
    """A DNS name finds its certificate; a typo finds the closest certificate name."""
    import difflib

    owner = next((c.name for c in config.certificates if name.lower().rstrip(".") in c.names),
                 None)  # fmt: skip
    if owner is not None:
        return f"{name} is a name in certificate '{owner}': use `{owner}`"
    close = difflib.get_close_matches(name, [c.name for c in config.certificates], n=1)
    return f"did you mean '{close[0]}'?" if close else None


def _context(
    config: Config,
    store: Store,
    issuer: Issuer | None,
    solvers: Solvers,
    clock: Clock,
    stage: str = "production",
    failover: Failover | None = None,
    master: bool = True,
) -> Context:
    """The composition root: the real runner, TLS prober and clock. With `failover`, a
    keepalived node's deployer: the MASTER's (gate, peer first) or, receiving, the
    BACKUP's."""

    def prober(deploy: DeploySpec) -> TlsProber:
        return TlsProber(clock, deploy.trust_roots)

    if failover is None:
        deployer = Deployer(store, system.run, prober, clock, stage)
        return Context(config, store, issuer, solvers, clock, deployer)
    from .failover import FailoverDeployer

    deployer = FailoverDeployer(store, system.run, prober, clock, failover, master)
    gate = failover if master and failover.override is None else None
    return Context(config, store, issuer, solvers, clock, deployer, failover=gate)


def context_for_import(config: Config, store: Store) -> Context:
    """The production context without a CA or failover: to stage what is imported."""
    return _context(config, store, None, Solvers(), SystemClock())


def _failover(config: Config, override: str | None) -> Failover | None:
    if config.failover is None:
        if override is not None:
            raise UsageError(f"--failover-override: no failover is configured in {config.source}")
        return None
    from .failover import Failover

    if override is not None:
        log.warning("failover gate overridden by the operator: %s", override)
    return Failover(config.failover, system.run, override)


def _rehearsal(
    config: Config, solvers: Solvers, clock: Clock, issuer: Issuer | None = None
) -> Rehearsal | None:
    """The staging side: its own store, CA and deployer; the same solvers and clock."""
    staging = config.staging
    if staging is None:
        return None
    from .rehearse import Rehearsal  # deferred: imports render (jinja2 on use)

    def make_ctx() -> Context:
        store = Store(staging.state_dir, config.state_group)
        staging_config = replace(config, state_dir=staging.state_dir, ca=staging.ca, staging=None)
        staging_issuer = issuer or acme_issuer(staging.ca, config, store, clock)
        return _context(staging_config, store, staging_issuer, solvers, clock, "staging")

    return Rehearsal(config, staging, make_ctx)


def acme_issuer(ca: CASpec, config: Config, store: Store, clock: Clock) -> AcmeIssuer:
    """The ACME adapter for one CA, its account kept under `store`."""
    from .acme_issuer import AcmeIssuer  # deferred: acme/josepy/requests cost ~0.3 s to import

    account_dir = store.account_dir(ca.directory)
    bundle = _trust_bundle(ca, store.root) if ca.trust_roots else None
    return AcmeIssuer(ca, config.policy, account_dir, bundle, clock.sleep, clock.monotonic)


def _trust_bundle(ca: CASpec, state_dir: Path) -> Path:
    """The system's trust store plus the configured roots, for a private CA.

    Verification is never switched off; a private CA is trusted by adding it.
    """
    import certifi  # a requests dependency; the same store requests uses by default

    parts = [Path(certifi.where()).read_bytes()]
    parts += [root.read_bytes() for root in ca.trust_roots]
    folder = state_dir / "trust"
    make_private_dir(folder)
    path = folder / "ca-bundle.pem"
    bundle = b"\n".join(parts)
    if not path.is_file() or path.read_bytes() != bundle:  # most runs: unchanged, no write
        atomic_write(path, bundle, 0o644)
    return path


def finish(config: Config, store: Store, report: Report, clock: Clock) -> None:
    """After every run that can change something: the audit record, then metrics,
    notifications and (for renew) the heartbeat. None of these can fail the run."""
    from . import metrics, notify  # deferred: smtplib and urllib only when a run finishes

    try:
        store.append_history(_history_record(report, config))
    except OSError as exc:  # a full disk must not hide the run's own outcome
        log.error("cannot append to %s: %s", store.root / "history.jsonl", exc.strerror or exc)
    # The run's work is done and recorded; what follows must not change its exit status.
    try:
        if config.metrics_textfile is not None:
            metrics.write(config, config.metrics_textfile)
    except Exception as exc:  # reported, never fatal
        log.warning("cannot write metrics to %s: %s", config.metrics_textfile, exc)
    try:
        notify.notify(config, report, clock.now(), clock.sleep)
    except Exception as exc:
        log.warning("notifications failed: %s", exc)
    if report.command == "renew" and config.heartbeat is not None:
        try:
            notify.ping(config.heartbeat, report, int(exit_status(report)))
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)


def _history_record(report: Report, config: Config) -> dict[str, object]:
    """One audit line: who ran what, every decision, every step, the files it changed."""
    return {
        "time": iso(report.finished),
        "started": iso(report.started),
        "command": report.command,
        "argv": sys.argv[1:] if sys.argv and sys.argv[0].endswith(("certagent", "__main__.py"))
        else None,
        "user": getpass.getuser(),
        "uid": os.getuid(),
        "pid": os.getpid(),
        "exit_status": int(exit_status(report)),
        "certificates": [_audit(r, config, report.command) for r in report.results],
    }  # fmt: skip


def _audit(r: CertResult, config: Config, report_command: str) -> dict[str, object]:
    steps = [{"step": s.step, "ok": s.ok, "detail": s.detail[:300]} for s in r.steps]
    overrides = [
        s.detail for s in r.steps if "NOT rehearsed" in s.detail or "OVERRIDDEN" in s.detail
    ]
    files: list[str] = []
    if any(s.step in ("swap", "commit", "rollback") and s.ok for s in r.steps):
        spec = config.certificate(r.name)
        staging = config.staging if report_command == "rehearse" else None
        root = staging.state_dir if staging else config.state_dir
        files.append(str(Store(root).current_link(r.name)))
        if spec is not None and spec.deploy is not None:
            for t in spec.deploy.templates:
                target = spec.staging.dir / t.dest.name if staging and spec.staging else t.dest
                files.append(str(target))
    return {
        "name": r.name,
        "outcome": r.outcome.value,
        "reason": r.decision.reason,
        "release": r.release,
        "error": r.error,
        "error_code": r.error_code,
        "overrides": overrides,
        "files_changed": files,
        "steps": steps,
    }
