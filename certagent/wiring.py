"""The composition root: the one place that wires certagent's ports to the world.

It builds the pipeline's context (the real runner, TLS prober, clock, the ACME adapter
for a CA, the staging side, a keepalived pair's deployer), selects certificates, maps
outcomes to the exit-status contract, and finishes every run that can change
something: the audit record, then metrics, notifications and the heartbeat. The
command modules (`api`, `monitoring`, `lifecycle`, `importer`) call only this.

Side effects: filesystem (state dir, trust bundle), network (through what it wires).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as config_mod
from . import layout, system
from .challenges import SolverFor, Solvers
from .context import Context, Issuer
from .errors import CertagentError, ExitStatus, UsageError
from .model import (
    CASpec,
    CertResult,
    CertSpec,
    Config,
    DeploySpec,
    OrderOptions,
    Outcome,
    RenewalWindow,
    Report,
    iso,
)
from .store import Store, atomic_write, make_private_dir
from .system import Clock, SystemClock

if TYPE_CHECKING:
    from .acme_issuer import AcmeIssuer
    from .failover import Failover
    from .rehearse import Rehearsal
    from .verify import TlsProber

log = logging.getLogger(__name__)

_SEVERITY = {
    Outcome.SKIPPED: ExitStatus.OK,
    Outcome.RENEWED: ExitStatus.OK,
    Outcome.REVOKED: ExitStatus.OK,
    Outcome.FAILED_BEFORE_SWAP: ExitStatus.FAILED,
    Outcome.ROLLED_BACK: ExitStatus.ROLLED_BACK,
    Outcome.BROKEN: ExitStatus.BROKEN,
}


def load_config(path: str | None = None) -> Config:
    """-c, then $CERTAGENT_CONFIG, then /etc/certagent/certagent.yaml."""
    return config_mod.load(config_mod.default_path(path, dict(os.environ)))


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
        listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        hints = [h for h in (_hint(config, n) for n in unknown) if h]
        raise UsageError(
            f"unknown certificate(s) {', '.join(unknown)} in {config.source} "
            f"(configured: {listed})" + "".join(f"; {h}" for h in hints)
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

    from .deploy import Deployer  # deferred: the deployer only where used

    probers: dict[tuple[object, ...], TlsProber] = {}

    def prober(deploy: DeploySpec) -> TlsProber:
        """One per set of trust roots: each loads the system's store (a group of 20
        would otherwise hold 20 copies, and read them 20 times)."""
        from .verify import TlsProber  # deferred: ssl only when something is verified

        key = tuple(deploy.trust_roots)
        found = probers.get(key)
        if found is None:
            found = probers[key] = TlsProber(clock, deploy.trust_roots)
        return found

    if failover is None:
        deployer = Deployer(store, system.run, prober, clock, stage)
        return Context(config, store, issuer, solvers, clock, deployer)
    from .failover import FailoverPeer

    peer = FailoverPeer(failover, master, prober, clock)
    deployer = Deployer(store, system.run, prober, clock, stage, peer)
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
        staging_issuer = issuer or LazyIssuer(staging.ca, config, store, clock)
        return _context(staging_config, store, staging_issuer, solvers, clock, "staging")

    return Rehearsal(config, staging, make_ctx)


class LazyIssuer:
    """The ACME adapter, built on first use: a run with nothing due imports no ACME
    library, writes no trust bundle and sends nothing to the CA."""

    def __init__(self, ca: CASpec, config: Config, store: Store, clock: Clock) -> None:
        self._args = (ca, config, store, clock)
        self._real: AcmeIssuer | None = None
        self._lock = threading.Lock()  # concurrent certificates share one adapter
        self.label = ca.directory

    def real(self) -> AcmeIssuer:
        with self._lock:
            if self._real is None:
                self._real = acme_issuer(*self._args)
            return self._real

    def issue(self, csr_pem: bytes, solver: SolverFor, options: OrderOptions) -> bytes:
        return self.real().issue(csr_pem, solver, options)

    def renewal_window(self, cert_pem: bytes) -> RenewalWindow | None:
        return self.real().renewal_window(cert_pem)


def acme_issuer(ca: CASpec, config: Config, store: Store, clock: Clock) -> AcmeIssuer:
    """The ACME adapter for one CA, its account kept under `store`."""
    from .acme_issuer import AcmeIssuer  # deferred: acme/josepy/requests cost ~0.3 s to import

    account_dir = store.account_dir(ca.directory)
    bundle = trust_bundle(ca, store.root) if ca.trust_roots else None
    return AcmeIssuer(ca, config.policy, account_dir, bundle, clock.sleep, clock.monotonic)


def trust_bundle(ca: CASpec, state_dir: Path) -> Path:
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
    try:
        store.append_history(history_record(report, config))
    except OSError as exc:  # a full disk must not hide the run's own outcome
        log.error("cannot append to %s: %s", store.root / layout.HISTORY, exc.strerror or exc)
    except CertagentError as exc:  # nor a history that cannot be read back
        log.error("cannot keep the history: %s", exc)
    # The run's work is done and recorded; what follows must not change its exit status.
    try:
        if config.metrics_textfile is not None:
            from . import metrics  # deferred, as notify: only a run that writes them

            metrics.write(config, config.metrics_textfile)
    except Exception as exc:  # reported, never fatal
        log.warning("cannot write metrics to %s: %s", config.metrics_textfile, exc)
    heartbeat = config.heartbeat if report.command == "renew" else None
    if config.notify.webhook is None and config.notify.email is None and heartbeat is None:
        return  # nothing to tell anyone: smtplib, urllib and ssl stay unimported
    from . import notify

    try:
        notify.notify(config, report, clock.now(), clock.sleep)
    except Exception as exc:
        log.warning("notifications failed: %s", exc)
    if heartbeat is not None:
        try:
            notify.ping(heartbeat, report, int(exit_status(report)))
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)


def history_record(report: Report, config: Config) -> dict[str, object]:
    """One audit line: who ran what, every decision, every step, the files it changed
    (the certificates as an iterator: the history encodes one at a time)."""
    return {
        "time": iso(report.finished),
        "started": iso(report.started),
        "command": report.command,
        "argv": sys.argv[1:] if sys.argv and sys.argv[0].endswith(("certagent", "__main__.py"))
        else None,
        "user": _user(),
        "uid": os.getuid(),
        "pid": os.getpid(),
        "exit_status": int(exit_status(report)),
        # nothing to do and nothing done: the decision only (10,000 full entries, twice
        # a day, would write megabytes a run)
        "certificates": ({"name": r.name, "outcome": r.outcome.value,
                          "reason": r.decision.reason} if _quiet(r)
                         else _audit(r, config, report.command) for r in report.results),
    }  # fmt: skip


def _quiet(r: CertResult) -> bool:
    return r.outcome is Outcome.SKIPPED and not r.steps and r.error is None


def _audit(r: CertResult, config: Config, report_command: str) -> dict[str, object]:
    steps = [{"step": s.step, "ok": s.ok, "detail": s.detail[:300]} for s in r.steps]
    overrides = [{"override": s.override, "step": s.step, "detail": s.detail[:300]}
                 for s in r.steps if s.override is not None]  # fmt: skip
    files: list[str] = []
    if any(s.step in ("swap", "commit", "rollback") and s.ok for s in r.steps):
        spec = config.certificate(r.name)
        staging = config.staging if report_command == "rehearse" else None
        root = staging.state_dir if staging else config.state_dir
        files.append(str(Store(root).current_link(r.name)))
        if spec is not None and spec.deploy is not None:
            for dest, _ in spec.deploy.placements():
                target = spec.staging.dir / dest.name if staging and spec.staging else dest
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


def _user() -> str:
    import getpass  # the audit line only

    return getpass.getuser()
