"""One certificate through plan -> order -> stage -> deploy (or commit) | rollback.

Outcomes are data (`CertResult`), never exceptions escaping the pipeline. The ports
it consumes (an issuer, solvers, a clock, the deployer) are declared in context.py
with the run's `Context` and one `Attempt`, and injected by `api`. What is checked
before ordering is in precheck.py, the order and the staged release in issuance.py,
what was issued and is not live in kept.py, the deploy in deploy/.

Side effects: through the injected issuer (network) and the store (filesystem).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import kept as kept_mod
from . import layout, plan
from .context import Attempt, Context, Issuer, Ready, result
from .errors import CAUnavailable, CertagentError, OrderFailed
from .issuance import Deferred, kept_issuance, order_and_stage, stage_kept
from .model import (
    CertResult,
    CertSpec,
    CertState,
    Decision,
    Outcome,
    Release,
    Undeployed,
)
from .precheck import before_ordering
from .steps import Steps
from .store import Snapshot
from .store.quiet import QuietRow

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


def renew_one(ctx: Context, spec: CertSpec, force: bool, new_order: bool = False) -> CertResult:
    """Plan again (we hold the lock), then order or retry, stage and deploy if due."""
    prepared = prepare(ctx, spec, force, new_order)
    if isinstance(prepared, CertResult):
        return prepared
    with ctx.serial:
        return apply(ctx, [prepared])[0]


@dataclass
class Surveyed:
    """What the store says of one certificate, read once; more work is ahead."""

    snap: Snapshot
    steps: Steps
    kept: Undeployed | None = None  # issued, not live: deployed instead of ordering
    hold: tuple[dt.datetime, str] | None = None  # the CA's Retry-After for every client
    relinked: bool = False  # the repair pointed `current` elsewhere: deploy what it says
    new_order: bool = False  # --new-order: nothing issued earlier is used instead
    decision: Decision | None = None  # due, as planned without asking the CA (None: ask)
    pretested: tuple[bool, str | None] = (False, None)  # config test before ordering: ran, why


def prepare(
    ctx: Context, spec: CertSpec, force: bool, new_order: bool = False
) -> CertResult | Ready:
    """Everything up to the deploy: plan, the keepalived gate, the rehearsal, the order
    (or a retry of a kept release) and the stage. A result when it ends here."""
    first = survey(ctx, spec, force, new_order)
    return first if isinstance(first, CertResult) else proceed(ctx, spec, force, first)


def survey(
    ctx: Context, spec: CertSpec, force: bool, new_order: bool = False
) -> CertResult | Surveyed:
    """The part without the network: repair the store and plan. A certificate that is
    not due, and whose renewal information need not be asked for now, ends here (the
    no-op run: cheap, so it is done one by one before any thread is started).
    `new_order`: a certificate issued earlier and not live is not deployed instead."""
    now = ctx.clock.now()
    if not force:  # nothing to do, as a run found since, and nothing changed (quiet.py)
        found = ctx.store.quiet.lookup(spec.name, now)
        if found is not None:
            return CertResult(spec.name, Outcome.SKIPPED,
                              Decision(False, found.reason, found.renew_at), (), found.release,
                              found.not_after)  # fmt: skip
    ctx.store.quiet.keep(spec.name, None)  # read again: kept again below if still quiet
    steps = Steps(ctx.clock)
    snap, relinked = repair(ctx, spec, steps)  # the store read once (again after a repair)
    state, current = snap.state, snap.current
    ca = ctx.config.directories
    kept = None if new_order else kept_mod.undeployed(ctx.store, spec, state, ca)
    hold = ctx.hold if ctx.hold is not None and now < ctx.hold[0] else None
    ask = current is not None and ctx.issuer is not None and _window_due(ctx, state)
    ask = ask and (current.ca if current and current.ca else ctx.config.ca.directory) not in \
        ctx.no_ari  # fmt: skip
    ask = ask and hold is None and not _waiting(state, now) and not force
    decision = None
    if state.pending is None and not ask:
        decision = plan.decide(spec, current, state, ctx.config.policy, now, force,
                               snap.damaged, kept, hold)  # fmt: skip
        if not decision.due and not (relinked and spec.deploy is not None):
            if current is not None and kept is None and not steps.results and not relinked:
                quiet = QuietRow(decision.reason, decision.renew_at, current.release_id,
                                 current.not_after, state.last_outcome, current.ca or None,
                                 current.fallback_note(ctx.config.ca.directory))  # fmt: skip
                ctx.store.quiet.keep(spec.name, quiet, _quiet_until(ctx, state, current,
                                                                    decision, hold, now))
            return result(spec, Outcome.SKIPPED, decision, steps, current)
    return Surveyed(snap, steps, kept, hold, relinked, new_order, decision)


def settle(ctx: Context, specs: Sequence[CertSpec]) -> None:
    """After their renewal: plan these certificates again as the next run would, so
    that what has nothing to do is in the no-op cache (quiet.py) and the first run
    after an issuance is as cheap as the rest. Nothing said or done here is reported:
    a certificate that is not quiet is simply planned by the next run."""
    for spec in specs:
        try:
            if not ctx.store.snapshot(spec.name).problems:  # else the next run repairs it
                survey(ctx, spec, False)  # and says so: nothing is repaired unreported
        except Exception as exc:  # the next run plans it, and says what it finds
            log.debug("%s: not planned again after its renewal: %s", spec.name, exc)


def _quiet_until(
    ctx: Context,
    state: CertState,
    current: Release,
    decision: Decision,
    hold: tuple[dt.datetime, str] | None,
    now: dt.datetime,
) -> dt.datetime | None:
    """The first moment at which `survey` could decide otherwise for a certificate with
    nothing to do: the time its decision names (the renewal time, a back-off's or a
    Retry-After's end), expiry, a CA-wide hold's end, the time to ask for the renewal
    window again, the end of "this CA offers no renewal information" (quiet.py)."""
    ca = current.ca or ctx.config.ca.directory
    times = (decision.renew_at, current.not_after, state.retry_after, state.ari_next,
             hold[0] if hold else None, ctx.no_ari.get(ca))  # fmt: skip
    later = [t for t in times if t is not None and t > now]
    return min(later) if later else None


def pretest_due(ctx: Context, todo: Sequence[tuple[CertSpec, Surveyed]]) -> None:
    """The config test before ordering, for every certificate that survey found due and
    that will be ordered (nothing issued is waiting for it): once per web server, with
    every such certificate's candidate in view, instead of once each (precheck.py)."""
    from .precheck import pretest_many

    now = ctx.clock.now()
    due = []
    for spec, s in todo:
        current = s.snap.current
        kept = s.kept if s.kept is not None and plan.usable(spec, s.kept, current, now) else None
        if s.decision is not None and s.decision.due and kept is None:
            due.append((spec, s))
    if len(due) < 2:  # one alone is tested where it is ordered
        return

    def shared(spec: CertSpec) -> object:
        key = _group_key(ctx, spec, 0)
        return key if key[0] == "group" else None  # None: tested alone

    found = pretest_many(ctx, [(spec, s.snap.current) for spec, s in due], shared)
    for spec, s in due:
        s.pretested = (True, found[spec.name])


def _waiting(state: CertState, now: dt.datetime) -> bool:
    """The CA asked not to be asked about this certificate before `retry_after`."""
    return state.retry_after is not None and now < state.retry_after


def proceed(ctx: Context, spec: CertSpec, force: bool, surveyed: Surveyed) -> CertResult | Ready:
    """The rest of `prepare`: the end of an interrupted deploy, the CA's renewal window,
    and for a due certificate the gate, the rehearsal, the order and the stage."""
    snap, steps, kept, hold = surveyed.snap, surveyed.steps, surveyed.kept, surveyed.hold
    state = snap.state
    if state.pending is not None:
        with ctx.serial:
            resumed = resume(ctx, spec, state)
        if resumed is not None:
            return resumed
        snap = ctx.store.snapshot(spec.name)
        state = snap.state
        # a run that died before its flip left that release to deploy (resume marked it)
        ca = ctx.config.directories
        kept = None if surveyed.new_order else kept_mod.undeployed(ctx.store, spec, state, ca)
    current = snap.current
    now = ctx.clock.now()
    deploy_kept = kept if kept is not None and plan.usable(spec, kept, current, now) else None
    # (forced: due whatever the window says, so the CA is not asked about it)
    asked = deploy_kept is None and hold is None and not _waiting(state, now) and not force
    if current is not None and ctx.issuer is not None and asked:
        issuer = ctx.issuer_of(current.ca)
        state = _refresh_window(ctx, spec, current, issuer, state) if issuer else state
    decision = plan.decide(spec, current, state, ctx.config.policy, now, force, snap.damaged,
                           kept, hold)  # fmt: skip
    if not decision.due and surveyed.relinked and current is not None and spec.deploy:
        # The repair changed what `current` says: deploy it, so that what is served is
        # what status reports (a server would otherwise change certificate at restart).
        decision = Decision(True, f"{decision.reason}; but the repair pointed current at "
                            f"{current.release_id}: deploying it", now)  # fmt: skip
        deploy_kept = kept_mod.as_undeployed(current, "the repaired live release")
    if not decision.due:
        return result(spec, Outcome.SKIPPED, decision, steps, current)
    attempt = Attempt.begin(ctx, spec, decision, steps)
    try:
        with ctx.serial:
            if ctx.failover is not None:
                ctx.progress(spec.name, "checking the keepalived pair")
                with attempt.steps.step("failover") as notes:
                    skip = ctx.failover.may_order(spec)
                    notes.append(skip or "this node is MASTER and the peer is ready")
                if skip is not None:
                    skipped = Decision(False, f"{decision.reason}, but {skip}", decision.renew_at)
                    return result(spec, Outcome.SKIPPED, skipped, attempt.steps, current)
            if deploy_kept is None:
                before_ordering(ctx, spec, current, attempt.steps, surveyed.pretested)
            rehearsed(ctx, spec, attempt.steps)
        if deploy_kept is not None:
            release = stage_kept(ctx, spec, deploy_kept, attempt.steps)
        else:
            found = None if surveyed.new_order else kept_issuance(ctx, spec, attempt.steps)
            compromised = state.revoked is not None and state.revoked[1] == "keyCompromise"
            reuse = None if compromised else current  # never the key of a compromise
            release = found or order_and_stage(ctx, spec, attempt.steps, current, reuse)
    except Deferred as exc:  # not a failure: no backoff, no alert; a later run orders
        later = Decision(False, f"{decision.reason}, but {exc}", exc.until)
        return result(spec, Outcome.SKIPPED, later, attempt.steps, current)
    except CAUnavailable as exc:  # nothing was sent: skipped, no back-off of its own
        later = Decision(False, f"{decision.reason}, but the CA is unavailable", exc.retry_at)
        return result(spec, Outcome.SKIPPED, later, attempt.steps, current, str(exc),
                       exc.code)  # fmt: skip
    except CertagentError as exc:
        return attempt.record(Outcome.FAILED_BEFORE_SWAP, state, current, exc)
    return Ready(attempt, release, current, state)


def apply_all(ctx: Context, prepared: Sequence[CertResult | Ready]) -> list[CertResult]:
    """Deploy what was staged, in the configured order: certificates sharing a web
    server (the same test and hook, `deploy.group`) together, with one config test and
    one reload; the others as groups of one (deploy/flow.py). Results in the order given."""
    groups: dict[tuple[object, ...], list[Ready]] = {}
    for item in prepared:
        if isinstance(item, Ready):
            groups.setdefault(_group_key(ctx, item.attempt.spec, id(item)), []).append(item)
    done: dict[int, CertResult] = {}
    for members in groups.values():
        try:
            done.update(zip(map(id, members), apply(ctx, members), strict=True))
        except Exception as exc:  # these certificates' failure; the others go on
            for r in members:
                if id(r) not in done:
                    done[id(r)] = failed(ctx, r.attempt.spec, exc)
    return [item if isinstance(item, CertResult) else done[id(item)] for item in prepared]


def _group_key(ctx: Context, spec: CertSpec, alone: int) -> tuple[object, ...]:
    deploy = spec.deploy
    if deploy is None or not deploy.group or deploy.hook is None:
        return ("alone", alone)
    from .deploy.hooks import per_certificate  # the deploy path only

    if per_certificate(deploy.test) or per_certificate(deploy.hook):
        return ("alone", alone)
    return ("group", deploy.test, deploy.hook, deploy.haproxy_socket, ctx.deployer.group_tag(spec))


def apply(ctx: Context, members: Sequence[Ready]) -> list[CertResult]:
    """Make staged releases live and record each: deployed as one group (one of them
    alone is a group of one), or only `current` flipped when nothing is deployed."""
    if len(members) == 1 and members[0].attempt.spec.deploy is None:
        r = members[0]
        with r.attempt.steps.step("commit", f"current -> {r.release.release_id}"):
            ctx.store.activate(r.attempt.spec.name, r.release.release_id)
        prev_id = r.current.release_id if r.current else None
        state = replace(r.state, failed_release=None, previous_release=prev_id)
        return [r.attempt.record(Outcome.RENEWED, state, r.release)]
    from .deploy import Member

    many = f"a group of {len(members)}" if len(members) > 1 else ""
    ctx.progress(members[0].attempt.spec.name, f"deploying {many}".strip())
    group = [Member(r.attempt.spec, r.release, r.current, r.state, r.attempt.steps)
             for r in members]  # fmt: skip
    ctx.deployer.deploy(group)
    results = []
    for r, m in zip(members, group, strict=True):
        if m.error is not None:  # refused before the swap: nothing live changed
            state = replace(m.state, failed_release=r.release.release_id)
            results.append(r.attempt.record(Outcome.FAILED_BEFORE_SWAP, state, r.current, m.error))
            continue
        outcome = m.outcome or Outcome.BROKEN
        live = r.release if outcome is Outcome.RENEWED else ctx.store.current(r.attempt.spec.name)
        results.append(r.attempt.record(outcome, m.state, live))
    return results


def repair(ctx: Context, spec: CertSpec, steps: Steps) -> tuple[Snapshot, bool]:
    """Put the store right before planning (we hold the lock): half-written releases
    of a killed run, an unreadable state file, a missing or dangling `current` link.
    What was done is a step of the result, so the report and the audit log say it.
    Returns the certificate as the store now holds it, and whether `current` was
    pointed at another release (which must then be deployed)."""
    done = [f"removed {p.name}, left by a run that died" for p in
            ctx.store.cleanup_partial(spec.name, ctx.clock.now())]  # fmt: skip
    snap = ctx.store.snapshot(spec.name)
    repaired = ctx.store.repair(spec.name, snap, ctx.clock.now())
    done += repaired
    for note in done:
        log.warning("%s: %s", spec.name, note)
    if done:
        steps.add("repair", True, 0.0, "; ".join(done))
    return (ctx.store.snapshot(spec.name) if repaired else snap), snap.relink is not None


def failed(ctx: Context, spec: CertSpec, exc: BaseException) -> CertResult:
    """What escaped one certificate's pipeline (a store it cannot write, a bug): that
    certificate's failure, recorded, so the run goes on with the others."""
    if isinstance(exc, CertagentError):
        error, code = str(exc), exc.code or "failed"
    elif isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        error, code = f"{exc.strerror or exc}{where}", "os-error"
    else:
        error, code = f"internal error: {type(exc).__name__}: {exc}", "internal-error"
    log.error("%s: %s", spec.name, error, exc_info=code != "failed")
    outcome = Outcome.FAILED_BEFORE_SWAP
    try:
        state = ctx.store.read_state(spec.name)
        live = ctx.store.current(spec.name)
        if state.pending is not None and live is not None and live.release_id == state.pending[0]:
            outcome = Outcome.BROKEN  # swapped, not verified: said loudly; the next run resumes
            error += "; the swap was not verified: the next run verifies it or rolls back"
        ctx.store.write_state(
            spec.name,
            replace(
                state,
                last_outcome=outcome.value,
                last_attempt=ctx.clock.now(),
                attempts=state.attempts + 1,
                failures=state.failures + 1,
                consecutive_failures=state.consecutive_failures + 1,
            ),
        )
    except (CertagentError, OSError) as again:
        log.error("%s: cannot record the failure either: %s", spec.name, again)
    decision = Decision(True, "the run for this certificate failed")
    return CertResult(spec.name, outcome, decision, error=error, error_code=code)


def rehearsed(ctx: Context, spec: CertSpec, steps: Steps) -> None:
    """The staging gate before anything reaches production: raises if the rehearsal failed."""
    if ctx.rehearse is not None and spec.staging is not None:
        ctx.progress(spec.name, "rehearsing on the staging CA")
        ctx.rehearse(spec, steps)


def resume(ctx: Context, spec: CertSpec, state: CertState) -> CertResult | None:
    """A run died between swap and verify: finish it, or roll back. None: nothing was swapped."""
    if state.pending is None:
        return None
    new_id, prev_id = state.pending
    new = ctx.store.find(spec.name, new_id)
    current = ctx.store.current(spec.name)
    if new is None or current is None or current.release_id != new_id or spec.deploy is None:
        # Died before the flip: nothing live changed; retry that release in the normal way.
        ctx.store.write_state(spec.name, replace(state, pending=None, failed_release=new_id))
        return None
    decision = Decision(True, f"an interrupted run swapped to {new_id} without verifying it")
    attempt = Attempt.begin(ctx, spec, decision)
    from .deploy import Member

    member = Member(spec, new, ctx.store.find(spec.name, prev_id), state, attempt.steps)
    ctx.deployer.finish([member])
    return attempt.record(member.outcome or Outcome.BROKEN, member.state,
                          ctx.store.current(spec.name))  # fmt: skip


ARI_NO_RETRY_AFTER = dt.timedelta(hours=6)  # how often to ask when the CA did not say
ARI_NONE = dt.timedelta(days=1)  # how often to ask again a CA that offers no ARI
ARI_RETRY = dt.timedelta(hours=1)  # after the CA could not be asked


def _window_due(ctx: Context, state: CertState) -> bool:
    """Whether the CA's renewal window is to be asked for now (RFC 9773 section 4.3)."""
    return state.ari_next is None or ctx.clock.now() >= state.ari_next


def _refresh_window(
    ctx: Context, spec: CertSpec, current: Release, issuer: Issuer, state: CertState
) -> CertState:
    """Ask the CA for its renewal window, no sooner than its Retry-After said (RFC 9773
    section 4.3), and a CA that offers none once a day: a run with nothing due then
    sends nothing to the CA at all. A failure only means we plan without it."""
    now = ctx.clock.now()
    if not _window_due(ctx, state):
        return state
    try:
        window = issuer.renewal_window((current.path / layout.CERT).read_bytes())
    except (CertagentError, OSError) as exc:
        failed = exc if isinstance(exc, OrderFailed) else None
        quiet = failed is not None and failed.repeated  # one warning per outage and run
        (log.debug if quiet else log.warning)(
            "%s: no renewal information this run: %s", spec.name, exc
        )
        window, ari_next = state.window, now + ARI_RETRY  # keep what we knew; ask later
        retry_at = failed.retry_at if failed is not None else None
        if retry_at is not None and not isinstance(exc, CAUnavailable):
            # the CA's Retry-After on this certificate's renewalInfo: nothing about it
            # goes to the CA before then (a CA-wide one is kept by the adapter)
            ari_next = max(ari_next, retry_at)
            state = replace(state, retry_after=retry_at)
    else:
        ari_next = now + ARI_NONE  # no ARI at this CA
        if window is not None:
            ari_next = window.next_check or now + ARI_NO_RETRY_AFTER
    state = replace(state, window=window, ari_next=ari_next)
    try:
        ctx.store.write_state(spec.name, state)
    except OSError as exc:  # remembered next time; planning goes on without it
        log.warning("%s: cannot record the renewal window: %s", spec.name, exc.strerror or exc)
    return state
