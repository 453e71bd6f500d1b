"""Public entry points (renew, plan, status) and the composition root.

The CLI, the Salt modules and Python callers all come through here and get the
same `Report`. The ACME adapter is imported only when a run needs it, so that
`certagent --help` and `certagent status` never import `acme` or `josepy`.

Side effects: filesystem (state dir), network (through the issuer).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from . import pipeline, plan
from .challenges import Solvers
from .errors import ExitStatus, UsageError
from .model import CertResult, CertSpec, Config, Outcome, Report, iso
from .pipeline import Context, Issuer, Progress
from .store import Store, atomic_write, make_private_dir
from .system import Clock, SystemClock

_SEVERITY = {
    Outcome.SKIPPED: ExitStatus.OK,
    Outcome.RENEWED: ExitStatus.OK,
    Outcome.FAILED_BEFORE_SWAP: ExitStatus.FAILED,
    Outcome.ROLLED_BACK: ExitStatus.ROLLED_BACK,
    Outcome.BROKEN: ExitStatus.BROKEN,
}


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
    progress: Progress | None = None,
) -> Report:
    """Renew what is due (or everything named, with force). One run at a time (exit 75)."""
    specs = select(config, names)
    clock = clock or SystemClock()
    store = Store(config.state_dir)
    started = clock.now()
    with store.lock():
        solvers = Solvers()
        ctx = Context(config, store, issuer or _acme_issuer(config, store, clock), solvers, clock)
        try:
            results = []
            for i, spec in enumerate(specs, 1):
                if progress is not None:
                    ctx.progress = _labelled(progress, f"[{i}/{len(specs)}] {spec.name}")
                    ctx.progress(spec.name, "planning")
                results.append(pipeline.renew_one(ctx, spec, force))
        finally:
            solvers.close()
        report = Report("renew", started, clock.now(), tuple(results))
        store.append_history(_history_record(report))
    return report


def plan_run(
    config: Config, names: Sequence[str] = (), force: bool = False, *, clock: Clock | None = None
) -> Report:
    """What `renew` would do now, and why. Reads the store; writes nothing; no network."""
    specs = select(config, names)
    clock = clock or SystemClock()
    store = Store(config.state_dir)
    now = clock.now()
    results = []
    for spec in specs:
        current = store.current(spec.name)
        decision = plan.decide(
            spec, current, store.read_state(spec.name), config.policy, now, force
        )
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
    store = Store(config.state_dir)
    rows = []
    for spec in select(config, names):
        current = store.current(spec.name)
        state = store.read_state(spec.name)
        decision = plan.decide(spec, current, state, config.policy, now)
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
                reason=decision.reason,
            )
        )
    return rows


def _labelled(progress: Progress, label: str) -> Progress:
    def report(_name: str, what: str) -> None:
        progress(label, what)

    return report


def exit_status(report: Report) -> ExitStatus:
    return max((_SEVERITY[r.outcome] for r in report.results), default=ExitStatus.OK)


def select(config: Config, names: Sequence[str]) -> tuple[CertSpec, ...]:
    if not names:
        return config.certificates
    unknown = [n for n in names if config.certificate(n) is None]
    if unknown:
        known = ", ".join(c.name for c in config.certificates)
        raise UsageError(
            f"unknown certificate(s) {', '.join(unknown)} in {config.source} (configured: {known})"
        )
    return tuple(c for c in config.certificates if c.name in names)


def _acme_issuer(config: Config, store: Store, clock: Clock) -> Issuer:
    from .acme_issuer import AcmeIssuer  # deferred: acme/josepy/requests cost ~0.3 s to import

    account_dir = store.account_dir(config.ca.directory)
    bundle = _trust_bundle(config, store.root) if config.ca.trust_roots else None
    return AcmeIssuer(config.ca, config.policy, account_dir, bundle, clock.sleep, clock.monotonic)


def _trust_bundle(config: Config, state_dir: Path) -> Path:
    """The system's trust store plus the configured roots, for a private CA.

    Verification is never switched off; a private CA is trusted by adding it.
    """
    import certifi  # a requests dependency; the same store requests uses by default

    parts = [Path(certifi.where()).read_bytes()]
    parts += [root.read_bytes() for root in config.ca.trust_roots]
    folder = state_dir / "trust"
    make_private_dir(folder)
    path = folder / "ca-bundle.pem"
    atomic_write(path, b"\n".join(parts), 0o644)
    return path


def _history_record(report: Report) -> dict[str, object]:
    return {
        "time": iso(report.finished),
        "started": iso(report.started),
        "command": report.command,
        "user": getpass.getuser(),
        "pid": os.getpid(),
        "exit_status": int(exit_status(report)),
        "certificates": [
            {
                "name": r.name,
                "outcome": r.outcome.value,
                "reason": r.decision.reason,
                "release": r.release,
                "error": r.error,
            }
            for r in report.results
        ],
    }
