"""Public entry points: renew, deploy, receive, rollback, rehearse, plan, status,
history, validate; and, re-exported, `check`/`health` (monitoring), the lifecycle and
the composition root's helpers, so every caller imports one module.

The CLI, the Salt modules and Python callers all come through here and get the same
`Report`. The ACME adapter is imported only when a run needs it, so that
`certagent --help` and `certagent status` never import `acme` or `josepy`.

Side effects: filesystem (state dir), network (through the issuer).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import issuance, pipeline, plan
from . import kept as kept_mod
from .challenges import Solvers
from .context import Attempt, Context, Issuer, Progress, Ready
from .errors import CertagentError, GateRefused, StoreError, UsageError
from .model import CertResult, CertSpec, Config, Decision, Outcome, Report
from .precheck import precheck
from .queries import StatusRow, history, history_records, plan_run, status
from .steps import Steps
from .store import Store
from .system import Clock, SystemClock
from .wiring import (
    LazyIssuer,
    _context,
    _failover,
    _rehearsal,
    acme_issuer,
    context_for_import,
    exit_status,
    finish,
    history_record,
    load_config,
    select,
)

if TYPE_CHECKING:  # re-exported below, imported on first use: `status` needs neither
    from .failover import Handed
    from .health import Health, health
    from .monitoring import CheckReport, Thresholds, check, check_endpoint, check_targets

log = logging.getLogger(__name__)
_LAZY = {
    "Health": "health", "health": "health", "CheckReport": "monitoring",
    "Thresholds": "monitoring", "check": "monitoring", "check_endpoint": "monitoring",
    "check_targets": "monitoring",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """The check and health entry points, imported when first asked for (PEP 562):
    they bring ssl, sockets and cryptography, which `status` and `plan` do not need."""
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __package__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckReport", "Health", "StatusRow", "Thresholds", "acme_issuer", "check",
    "check_endpoint", "check_targets", "context_for_import", "deploy", "exit_status",
    "finish", "health", "history", "history_record", "history_records", "load_config",
    "plan_run", "receive", "rehearse", "renew", "rollback", "select", "splay", "status", "validate",
]  # fmt: skip


def validate(config: Config) -> list[str]:
    """`config validate` beyond parsing: what would make an issued certificate unusable
    (templates that are missing, broken or use an undefined variable, destination
    directories and webroots that do not exist), as ConfigError (exit 78). Returns
    warnings: certificates whose lifetime (the live one's, else its profile's) leaves
    too few runs at `policy.run_every` between renewal and expiry."""
    from .errors import ConfigError, ConfigProblem

    store = Store(config.state_dir)
    problems = []
    warnings = []
    for spec in config.certificates:
        for problem in precheck(spec, config.template_dirs, store):
            problems.append(ConfigProblem(f"certificates.{spec.name}", problem))
        try:
            current = store.current(spec.name)
        except (OSError, StoreError):
            current = None
        lifetime = (current.not_after - current.not_before) if current else \
            plan.PROFILE_LIFETIMES.get(spec.profile or "", plan.USUAL_LIFETIME)  # fmt: skip
        warning = plan.cadence_problem(spec.name, lifetime, config.policy)
        if warning:
            warnings.append(warning)
    if problems:
        raise ConfigError(str(config.source), problems)
    return warnings


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
    new_order: bool = False,
    allow_duplicate: bool = False,
    fallbacks: Sequence[Issuer] | None = None,
) -> Report:
    """Renew what is due (or everything named, with force). One run at a time (exit 75).

    A certificate issued earlier and not live (its deploy failed, or it was never
    staged) is deployed instead of ordering, with or without `force`, unless
    `new_order` asks for a new one. An order that would pass the CA's duplicate limit
    is refused before it is sent, unless `allow_duplicate`.

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
        store.keep_index()
        if not (force or new_order):  # the no-op cache (store/quiet.py)
            store.quiet.begin(config.inputs, [s.name for s in specs])
        solvers = Solvers(config.state_dir)
        solvers.sweep(
            [c for s in config.certificates for c in (s.challenge, *s.challenges.values())]
        )
        ctx = _context(
            config,
            store,
            issuer or LazyIssuer(config.ca, config, store, clock),
            solvers,
            clock,
            failover=_failover(config, failover_override),
        )
        ctx.rehearse = _rehearsal(config, solvers, clock, staging_issuer)
        if fallbacks is not None:  # given (tests), else the next CAs of `ca` as a list
            ctx.fallbacks = tuple(fallbacks)
        elif issuer is None:
            ctx.fallbacks = tuple(LazyIssuer(ca, config, store, clock)
                                  for ca in config.fallbacks)  # fmt: skip
        ctx.order_slots = threading.Semaphore(config.ca.max_orders)
        from .budget import DuplicateLedger, OrderBudget

        account = store.account_dir(config.ca.directory)
        ctx.budget = OrderBudget(account, config.ca.max_new_orders, config.ca.new_orders_window)
        ctx.hold = kept_mod.ca_hold(store, config.directories, clock.now())  # once a run
        ctx.no_ari = _no_ari(config, store, clock.now())
        ctx.duplicates = DuplicateLedger(
            account, config.ca.max_duplicates, config.ca.duplicates_window, not allow_duplicate
        )

        def own(i: int, spec: CertSpec) -> Context:
            if progress is None:
                return ctx
            label = _labelled(progress, f"[{i}/{len(specs)}] {spec.name}")
            return replace(ctx, progress=label)

        def first(i: int, spec: CertSpec) -> CertResult | pipeline.Surveyed:
            mine = own(i, spec)
            mine.progress(spec.name, "planning")
            try:
                return pipeline.survey(mine, spec, force or new_order, new_order)
            except Exception as exc:  # this certificate's failure; the others go on
                return pipeline.failed(mine, spec, exc)

        def rest(
            i: int, spec: CertSpec, surveyed: pipeline.Surveyed
        ) -> CertResult | Ready:
            mine = own(i, spec)
            try:
                return pipeline.proceed(mine, spec, force or new_order, surveyed)
            except Exception as exc:  # this certificate's failure; the others go on
                return pipeline.failed(mine, spec, exc)

        try:
            # What needs no network is planned one by one (a no-op run ends here); the
            # rest is worked on concurrently; the report keeps the configured order.
            surveyed = [first(i, spec) for i, spec in enumerate(specs, 1)]
            todo = [(i, s) for i, s in enumerate(surveyed) if isinstance(s, pipeline.Surveyed)]
            # The config test before ordering: once per web server for all that are due.
            pipeline.pretest_due(ctx, [(specs[i], s) for i, s in todo])
            more: dict[int, CertResult | Ready] = {}
            workers = min(config.policy.concurrency, len(todo))
            if workers <= 1:
                more = {i: rest(i + 1, specs[i], s) for i, s in todo}
            else:
                from concurrent.futures import ThreadPoolExecutor  # renew only

                with ThreadPoolExecutor(workers, thread_name_prefix="renew") as pool:
                    done = pool.map(lambda t: rest(t[0] + 1, specs[t[0]], t[1]), todo)
                    more = dict(zip((i for i, _ in todo), done, strict=True))
            prepared = [
                more[i] if isinstance(s, pipeline.Surveyed) else s for i, s in enumerate(surveyed)
            ]
            # Then the deploys, one web server at a time; those that share one together.
            results = pipeline.apply_all(ctx, prepared)
            renewed = {r.name for r in results if r.outcome is Outcome.RENEWED}
            if renewed and store.quiet.active:  # planned again, for the next run (quiet.py)
                ctx.hold = kept_mod.ca_hold(store, config.directories, clock.now())
                ctx.no_ari = _no_ari(config, store, clock.now())
                pipeline.settle(ctx, [s for s in specs if s.name in renewed])
        finally:
            solvers.close()
        report = Report("renew", started, clock.now(), tuple(results))
        finish(config, store, report, clock)
        store.save_index([c.name for c in config.certificates])
    return report


def _no_ari(config: Config, store: Store, now: dt.datetime) -> dict[str, dt.datetime]:
    """The CAs seen without renewal information, and until when that is believed."""
    from .castate import ari_absent_until

    found = {ca: ari_absent_until(store.account_path(ca), now) for ca in config.directories}
    return {ca: until for ca, until in found.items() if until is not None}


def deploy(
    config: Config,
    name: str,
    *,
    clock: Clock | None = None,
    failover_override: str | None = None,
) -> Report:
    """Deploy without ordering (fresh render, test, hook, verify): the newest certificate
    issued for `name` that is not live yet (its deploy failed, or it was never staged),
    else the current release again. On a keepalived MASTER, the peer first, as in `renew`."""
    spec = select(config, [name])[0]
    if spec.deploy is None:
        raise UsageError(f"certificate {name} has no deploy section in {config.source}")
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        current = store.current(name)
        state = store.read_state(name)
        kept = kept_mod.undeployed(store, spec, state, config.directories)
        if kept is not None and not plan.usable(spec, kept, current, clock.now()):
            kept = None  # other names or key type since, expired, or older than what is live
        if current is None and kept is None:
            raise UsageError(f"certificate {name} has no release yet; run `certagent renew {name}`")
        solvers = Solvers(config.state_dir)
        failover = _failover(config, failover_override)
        ctx = _context(config, store, None, solvers, clock, failover=failover)
        ctx.rehearse = _rehearsal(config, solvers, clock)
        if kept is not None:
            what = "release" if kept.staged else "the kept issuance"
            decision = Decision(True, f"deploy requested: {what} {kept.ref}, {kept.summary()}")
        else:
            assert current is not None  # noqa: S101 - checked above
            decision = Decision(True, f"deploy of release {current.release_id} requested")
        attempt = Attempt.begin(ctx, spec, decision)
        try:
            if ctx.failover is not None:  # as in renew, but a BACKUP is refused, not skipped
                with attempt.steps.step("failover") as notes:
                    backup = ctx.failover.may_order(spec)
                    if backup is not None:
                        raise GateRefused(f"{backup}: run `certagent deploy` on the MASTER")
                    notes.append("this node is MASTER and the peer is ready")
            pipeline.rehearsed(ctx, spec, attempt.steps)
            if kept is not None:
                release = issuance.stage_kept(ctx, spec, kept, attempt.steps)
            else:
                assert current is not None  # noqa: S101 - checked above
                release = issuance.restage(ctx, spec, current, attempt.steps)
        except CertagentError as exc:
            result = attempt.record(Outcome.FAILED_BEFORE_SWAP, state, current, exc)
        else:
            result = pipeline.apply(ctx, [Ready(attempt, release, current, state)])[0]
        finally:
            solvers.close()
        report = Report("deploy", started, clock.now(), (result,))
        finish(config, store, report, clock)
    return report


def receive(
    config: Config,
    names: str | Sequence[str],
    payload: bytes,
    *,
    clock: Clock | None = None,
) -> Report:
    """The peer's side of a failover rollout: the MASTER hands over releases (key and
    chain, as JSON on stdin; one, or a group) and this node deploys them with its own
    config test, hook and checks (a group together, as `renew` would), rolling itself
    back if they fail. Nothing is ordered here."""
    from .failover import read_payload

    names = [names] if isinstance(names, str) else list(names)
    if not names or len(set(names)) != len(names):
        raise UsageError("receive: name each certificate handed over once")
    if len(names) == 1:  # one release: a certificate this node cannot take is a usage error
        _deployable(config, select(config, names)[0])
    handed = read_payload(names, payload)
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        failover = _failover(config, None)
        ctx = _context(config, store, None, Solvers(), clock, failover=failover, master=False)
        # In a group, such a certificate fails alone: it holds back no other member.
        prepared = [_received(ctx, h) for h in handed]
        results = pipeline.apply_all(ctx, prepared)
        report = Report("receive", started, clock.now(), tuple(results))
        finish(config, store, report, clock)
    return report


def _deployable(config: Config, spec: CertSpec) -> CertSpec:
    if spec.deploy is None:
        raise UsageError(f"certificate {spec.name} has no deploy section in {config.source}")
    return spec


def _received(ctx: Context, handed: Handed) -> CertResult | Ready:
    """One handed-over release staged here, or the reason it is not (not configured
    here, already live, or it cannot be staged)."""
    from . import crypto

    try:
        spec = _deployable(ctx.config, select(ctx.config, [handed.name])[0])
    except UsageError as exc:
        why = Decision(True, f"release {handed.source} handed over by the keepalived MASTER")
        return CertResult(handed.name, Outcome.FAILED_BEFORE_SWAP, why, error=str(exc),
                          error_code="not-configured")  # fmt: skip
    current = ctx.store.current(spec.name)
    state = ctx.store.read_state(spec.name)
    leaf = crypto.split_pem_chain(handed.fullchain)[:1]
    served = crypto.facts(leaf[0]).fingerprint_sha256 if leaf else None
    if current is not None and current.fingerprint_sha256 == served and state.pending is None:
        # Already live here (a retried rollout): nothing to stage, reload or verify.
        same = Decision(False, f"release {handed.source} is already live here")
        return CertResult(spec.name, Outcome.SKIPPED, same, (), current.release_id,
                          current.not_after)  # fmt: skip
    decision = Decision(True, f"release {handed.source} handed over by the keepalived MASTER")
    attempt = Attempt.begin(ctx, spec, decision)
    try:
        with attempt.steps.step("stage", f"from {handed.source}") as notes:
            release = issuance.stage(ctx, spec, handed.key, handed.fullchain, handed.ca)
            notes.append(f"release {release.release_id}")
    except CertagentError as exc:
        return attempt.record(Outcome.FAILED_BEFORE_SWAP, state, current, exc)
    return Ready(attempt, release, current, state)


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
            from .deploy import Member

            member = Member(spec, current, target, state, steps)
            ctx.deployer.rollback([member])
            outcome, state = member.outcome or Outcome.BROKEN, member.state
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
    solvers = Solvers(config.state_dir)
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
    Store(config.staging.state_dir).append_history(history_record(report, config))
    return report


def splay(seconds: float) -> None:
    """Sleep a random time up to `seconds`, so that many hosts' cron runs do not align."""
    import random
    import time

    time.sleep(random.uniform(0, seconds))  # noqa: S311 - spreading load, not a secret


def _labelled(progress: Progress, label: str) -> Progress:
    def report(_name: str, what: str) -> None:
        progress(label, what)

    return report
