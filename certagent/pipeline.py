"""One certificate through plan -> order -> stage -> commit.

Outcomes are data (`CertResult`), never exceptions escaping the pipeline. The
ports it consumes (an issuer, solvers, a clock) are declared here and injected.

Side effects: through the injected issuer (network) and the store (filesystem).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

from . import crypto, plan
from .challenges import Solver
from .errors import CertagentError
from .model import (
    CertResult,
    CertSpec,
    CertState,
    ChallengeSpec,
    Config,
    Decision,
    Outcome,
    Release,
    RenewalWindow,
    StepResult,
)
from .store import KEY_FILE, Store
from .system import Clock

log = logging.getLogger(__name__)


class Issuer(Protocol):
    @property
    def label(self) -> str: ...

    def issue(self, csr_pem: bytes, solver: Solver) -> bytes: ...

    def renewal_window(self, cert_pem: bytes) -> RenewalWindow | None: ...


class SolverSource(Protocol):
    def for_spec(self, spec: ChallengeSpec) -> Solver: ...


Progress = Callable[[str, str], None]  # (certificate name, what is happening)


@dataclass
class Context:
    config: Config
    store: Store
    issuer: Issuer
    solvers: SolverSource
    clock: Clock
    progress: Progress = field(default=lambda name, what: None)


class StageError(CertagentError):
    """The CA's answer cannot become a release (wrong key, missing names)."""


class _Steps:
    """Times each step and records its result, also when it raises."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.results: list[StepResult] = []

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[list[str]]:
        notes = [detail] if detail else []
        start = self.clock.monotonic()
        try:
            yield notes
        except CertagentError as exc:
            self.results.append(StepResult(name, False, self.clock.monotonic() - start, str(exc)))
            raise
        self.results.append(
            StepResult(name, True, self.clock.monotonic() - start, "; ".join(notes))
        )


def decide(ctx: Context, spec: CertSpec, force: bool) -> tuple[Decision, Release | None, CertState]:
    """The pure plan over what the store holds now (call it again inside the lock)."""
    current = ctx.store.current(spec.name)
    state = ctx.store.read_state(spec.name)
    return (
        plan.decide(spec, current, state, ctx.config.policy, ctx.clock.now(), force),
        current,
        state,
    )


def renew_one(ctx: Context, spec: CertSpec, force: bool) -> CertResult:
    """Plan again (we hold the lock), then order, stage and commit if due."""
    for leftover in ctx.store.cleanup_partial(spec.name):
        log.warning(
            "%s: removed a half-written release left by an interrupted run: %s", spec.name, leftover
        )
    current = ctx.store.current(spec.name)
    if current is not None:
        _refresh_window(ctx, spec, current)
    decision, current, state = decide(ctx, spec, force)
    if not decision.due:
        return CertResult(
            spec.name,
            Outcome.SKIPPED,
            decision,
            release=current.release_id if current else None,
            not_after=current.not_after if current else None,
        )
    steps = _Steps(ctx.clock)
    started = ctx.clock.now()
    try:
        release = _order_and_stage(ctx, spec, steps)
        with steps.step("commit", f"current -> {release.release_id}") as notes:
            ctx.store.activate(spec.name, release.release_id)
            pruned = ctx.store.prune(spec.name, ctx.config.policy.keep_releases)
            if pruned:
                notes.append(f"pruned {len(pruned)} old release(s)")
    except CertagentError as exc:
        ctx.store.write_state(
            spec.name,
            replace(
                state,
                last_outcome=Outcome.FAILED_BEFORE_SWAP.value,
                last_attempt=started,
                consecutive_failures=state.consecutive_failures + 1,
            ),
        )
        return CertResult(
            spec.name,
            Outcome.FAILED_BEFORE_SWAP,
            decision,
            tuple(steps.results),
            release=current.release_id if current else None,
            not_after=current.not_after if current else None,
            error=str(exc),
        )
    ctx.store.write_state(spec.name, CertState(Outcome.RENEWED.value, started, 0, None))
    return CertResult(
        spec.name,
        Outcome.RENEWED,
        decision,
        tuple(steps.results),
        release=release.release_id,
        not_after=release.not_after,
    )


def _order_and_stage(ctx: Context, spec: CertSpec, steps: _Steps) -> Release:
    with steps.step("order", ctx.issuer.label):
        ctx.progress(spec.name, "ordering")
        key = crypto.generate_key(spec.key_type)
        csr = crypto.make_csr(key, spec.names)
        fullchain = ctx.issuer.issue(csr, ctx.solvers.for_spec(spec.challenge))
    with steps.step("stage") as notes:
        release = stage(ctx, spec, key, fullchain)
        notes.append(
            f"release {release.release_id}, valid until {release.not_after:%Y-%m-%d %H:%M}"
        )
    return release


def stage(ctx: Context, spec: CertSpec, key: crypto.PrivateKey, fullchain: bytes) -> Release:
    """Check what the CA sent against what we asked for, then write one immutable release."""
    try:
        chain = crypto.split_pem_chain(fullchain)
    except ValueError as exc:
        raise StageError(f"the CA sent an unreadable certificate chain: {exc}") from exc
    if not chain:
        raise StageError("the CA sent no certificate")
    leaf = chain[0]
    if not crypto.key_matches(key, leaf):
        raise StageError("the CA's certificate does not match our key")
    facts = crypto.facts(leaf)
    missing = set(spec.names) - set(facts.names)
    if missing:
        raise StageError(f"the CA's certificate lacks {', '.join(sorted(missing))}")
    release_id = f"{ctx.clock.now():%Y%m%dT%H%M%S%fZ}-{facts.fingerprint_sha256[:8]}"
    meta = {
        "names": list(spec.names),
        "key_type": spec.key_type.value,
        "not_before": facts.not_before.isoformat(),
        "not_after": facts.not_after.isoformat(),
        "fingerprint_sha256": facts.fingerprint_sha256,
        "issuer": facts.issuer,
        "serial": format(facts.serial, "x"),
        "ca": ctx.issuer.label,
    }
    files = {
        KEY_FILE: crypto.key_pem(key),
        "cert.pem": leaf,
        "chain.pem": b"".join(chain[1:]),
        "fullchain.pem": b"".join(chain),
    }
    ctx.store.write_release(spec.name, files, meta, release_id)
    return ctx.store.release(spec.name, release_id)


def _refresh_window(ctx: Context, spec: CertSpec, current: Release) -> None:
    """Ask the CA for its renewal window; a failure only means we plan without it."""
    try:
        window = ctx.issuer.renewal_window((current.path / "cert.pem").read_bytes())
    except (CertagentError, OSError) as exc:
        log.warning("%s: no renewal information this run: %s", spec.name, exc)
        return
    state = ctx.store.read_state(spec.name)
    if window != state.window:
        ctx.store.write_state(spec.name, replace(state, window=window))
