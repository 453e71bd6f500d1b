"""What the pipeline's parts share for one run: the ports it consumes (an issuer,
solvers, a rehearsal, a failover pair's role), the run's `Context`, and one
`Attempt` at one certificate with how its outcome is recorded.

Side effects: the store (an attempt's record: state, pruning).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from .challenges import Solver, SolverFor
from .errors import CertagentError, GateRefused, OrderFailed, RehearsalFailed
from .model import (
    CertResult,
    CertSpec,
    CertState,
    ChallengeSpec,
    Config,
    Decision,
    OrderOptions,
    Outcome,
    Release,
    RenewalWindow,
)
from .steps import Steps
from .store import Store
from .system import Clock

if TYPE_CHECKING:
    from .budget import DuplicateLedger, OrderBudget
    from .deploy import Deployer

log = logging.getLogger(__name__)


class Issuer(Protocol):
    @property
    def label(self) -> str: ...

    def issue(self, csr_pem: bytes, solver: SolverFor, options: OrderOptions) -> bytes: ...

    def renewal_window(self, cert_pem: bytes) -> RenewalWindow | None: ...


class SolverSource(Protocol):
    def for_spec(self, spec: ChallengeSpec) -> Solver: ...

    def chooser(self, cert: CertSpec) -> SolverFor: ...

    def bind(self, cert: CertSpec) -> list[str]: ...


class Rehearser(Protocol):
    """Rehearse a certificate's deploy on the staging CA; raise if production must not go on."""

    def __call__(self, spec: CertSpec, steps: Steps) -> None: ...


class RoleGate(Protocol):
    """A failover pair: None if this node may order `spec`, a reason to skip it (a
    BACKUP), or GateRefused (neither role, or the peer is not ready)."""

    def may_order(self, spec: CertSpec) -> str | None: ...


Progress = Callable[[str, str], None]  # (certificate name, what is happening)


@dataclass
class Context:
    config: Config
    store: Store
    issuer: Issuer | None  # None for deploy and rollback, which never order
    solvers: SolverSource
    clock: Clock
    deployer: Deployer
    progress: Progress = field(default=lambda name, what: None)
    rehearse: Rehearser | None = None  # None: no staging CA configured, or this is staging
    failover: RoleGate | None = None  # None: not a keepalived node, or the gate is overridden
    # Held for whatever touches a web server or the keepalived pair (the gate, a
    # rehearsal, a deploy, the end of an interrupted one): with certificates worked on
    # concurrently, only orders, planning and staging overlap.
    serial: threading.Lock = field(default_factory=threading.Lock)
    # New orders in any window at this CA (ca.max_new_orders); None: no budget kept.
    budget: OrderBudget | None = None
    # Orders in flight at the CA at once (ca.max_orders), whatever the concurrency.
    order_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(4))
    # Certificates per set of names at this CA (ca.max_duplicates); None: not kept.
    duplicates: DuplicateLedger | None = None
    # The CA's Retry-After for every client, read once per run (kept.ca_hold); the
    # issuer itself refuses requests while one holds, this only shapes the plan.
    hold: tuple[dt.datetime, str] | None = None
    # CAs whose directory offers no renewal information (castate.ari_absent), read once
    # per run, and until when that is believed: no certificate of theirs asks for a window.
    no_ari: Mapping[str, dt.datetime] = field(default_factory=dict)
    # The next CAs, in order, when `issuer` cannot issue (config.fallbacks).
    fallbacks: tuple[Issuer, ...] = ()

    def issuer_of(self, ca: str) -> Issuer | None:
        """The issuer of the CA that issued a certificate (its renewal information is
        asked there), else the preferred one."""
        for issuer in self.fallbacks:
            if issuer.label == ca:
                return issuer
        return self.issuer


GATES = frozenset({GateRefused.code, RehearsalFailed.code})  # refusals counted for metrics


@dataclass
class Attempt:
    """One attempt at one certificate: what every step result and the record need."""

    ctx: Context
    spec: CertSpec
    decision: Decision
    steps: Steps
    started: dt.datetime

    @classmethod
    def begin(
        cls, ctx: Context, spec: CertSpec, decision: Decision, steps: Steps | None = None
    ) -> Attempt:
        return cls(ctx, spec, decision, steps or Steps(ctx.clock), ctx.clock.now())

    def record(
        self,
        outcome: Outcome,
        state: CertState,
        live: Release | None,
        error: str | CertagentError | None = None,
    ) -> CertResult:
        """Remember the outcome for the planner, prune, and build the result."""
        store, name = self.ctx.store, self.spec.name
        code = error.code if isinstance(error, CertagentError) else None
        # the CA's Retry-After, if it gave one
        retry_at = error.retry_at if isinstance(error, OrderFailed) else None
        if isinstance(error, CertagentError):
            error = str(error)
        verify = [s.ok for s in self.steps.results if s.step == "verify"]
        state = replace(
            state,
            last_outcome=outcome.value,
            last_attempt=self.started,
            attempts=state.attempts + 1,
            failures=state.failures + (outcome is not Outcome.RENEWED),
            refusals=state.refusals + (code in GATES),
            verify_ok=verify[-1] if verify else state.verify_ok,
        )
        if outcome is Outcome.RENEWED:
            state = replace(
                state,
                consecutive_failures=0,
                window=None,
                pending=None,
                retry_after=None,
                revoked=None,
                ari_next=None,  # a new certificate: ask about its window
                last_success=self.ctx.clock.now(),
                last_error=None,
            )
        else:
            state = replace(state, consecutive_failures=state.consecutive_failures + 1)
            if retry_at is not None:  # remembered: the next runs wait for it
                state = replace(state, retry_after=retry_at)
            if error is None:
                error = next((s.detail for s in self.steps.results if not s.ok), outcome.value)
            state = replace(state, last_error=short(error))
        # A failed deploy retried run after run re-stages its certificate each time:
        # old copies go as after a success (never the live, previous or kept one).
        keep = frozenset(x for x in (state.previous_release, state.failed_release) if x)
        try:
            pruned = store.prune(name, self.ctx.config.policy.keep_releases, keep)
        except OSError as exc:  # a full disk must not hide the outcome
            log.warning("%s: cannot prune old releases: %s", name, exc.strerror or exc)
            pruned = []
        if pruned:
            log.info("%s: pruned %d old release(s)", name, len(pruned))
        try:
            store.write_state(name, state)
        except OSError as exc:  # a full disk: the outcome itself must still be reported
            log.error("%s: cannot record the outcome: %s", name, exc.strerror or exc)
            error = f"{error or outcome.value} (and its state could not be recorded: " \
                f"{exc.strerror or exc})"  # fmt: skip
        return result(self.spec, outcome, self.decision, self.steps, live, error, code)


@dataclass
class Ready:
    """A staged release waiting for its deploy (or only its commit)."""

    attempt: Attempt
    release: Release
    current: Release | None
    state: CertState


def result(
    spec: CertSpec,
    outcome: Outcome,
    decision: Decision,
    steps: Steps,
    live: Release | None,
    error: str | None = None,
    error_code: str | None = None,
) -> CertResult:
    return CertResult(
        spec.name,
        outcome,
        decision,
        tuple(steps.results),
        release=live.release_id if live else None,
        not_after=live.not_after if live else None,
        error=error,
        error_code=error_code,
    )


def short(error: str, limit: int = 400) -> str:
    """An error as remembered in the state: one line, bounded."""
    line = " ".join(error.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
