"""The read-only commands: `plan` (what renew would do now, and why), `status` (each
certificate's release, expiry, next renewal and last outcome) and `history` (the audit
log). They read the store, write nothing, take no lock and send nothing to a CA; a
reader who cannot read the store is told so, never "due now".

Side effects: none (reads the state directory).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from . import kept as kept_mod
from . import plan
from .jsontext import Items
from .model import CertResult, CertSpec, Config, Decision, Outcome, Report, iso
from .store import Store
from .store.quiet import QuietRow
from .system import Clock, SystemClock
from .wiring import select


def history(config: Config, name: str | None = None, limit: int = 20) -> list[dict[str, object]]:
    """The newest `limit` audit records (those that touched `name`, if given)."""
    return list(_records(config, name, limit, False))


def history_records(
    config: Config, name: str | None = None, limit: int = 20
) -> Iterator[dict[str, object]]:
    """`history`, a record at a time as it is read (one run over 10,000 certificates
    is a record of about 1.3 MB: the command prints each before reading the next).
    An unknown `name` (UsageError) and a log that cannot be opened (StoreError) are
    raised here, before the first record is asked for: nothing is printed yet. A large
    record's certificates are a jsontext.Items, decoded as they are walked."""
    return _records(config, name, limit, True)


def _records(
    config: Config, name: str | None, limit: int, lazy: bool
) -> Iterator[dict[str, object]]:
    if name is not None:
        select(config, [name])
    records = Store(config.state_dir).history_backwards(lazy=lazy)
    first = next(records, None)
    return _touching(itertools.chain([] if first is None else [first], records), name, limit)


def _touching(
    records: Iterator[dict[str, object]], name: str | None, limit: int
) -> Iterator[dict[str, object]]:
    found = 0
    if limit <= 0:
        return
    for record in records:
        certs = record.get("certificates")
        touched = name is not None and isinstance(certs, list | Items) and any(
            isinstance(c, dict) and c.get("name") == name for c in certs
        )
        if name is None or touched:
            yield record
            found += 1
            if found >= limit:
                return


def plan_run(
    config: Config, names: Sequence[str] = (), force: bool = False, *, clock: Clock | None = None
) -> Report:
    """What `renew` would do now, and why. Reads the store; writes nothing; no network."""
    specs = select(config, names)
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    _readable(config)
    now = clock.now()
    results = []
    hold = kept_mod.ca_hold(store, config.directories, now)
    if not force:
        store.quiet.begin_reading(config.inputs, [s.name for s in specs])  # quiet.py
    for spec in specs:
        found = None if force else store.quiet.lookup(spec.name, now)
        if found is not None:
            decided = Decision(False, found.reason, found.renew_at)
            results.append(CertResult(spec.name, Outcome.SKIPPED, decided, release=found.release,
                                      not_after=found.not_after))  # fmt: skip
            continue
        snap = store.snapshot(spec.name)
        current = snap.current
        kept = kept_mod.undeployed(store, spec, snap.state, config.directories)
        decision = plan.decide(spec, current, snap.state, config.policy, now, force,
                               snap.damaged, kept, hold)  # fmt: skip
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
    ca: str | None = None  # the CA that issued the live certificate

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
            "ca": self.ca,
        }


def status(
    config: Config, names: Sequence[str] = (), *, clock: Clock | None = None
) -> list[StatusRow]:
    now = (clock or SystemClock()).now()
    store = Store(config.state_dir, config.state_group)
    _readable(config)
    rows = []
    hold = kept_mod.ca_hold(store, config.directories, now)
    specs = select(config, names)
    store.quiet.begin_reading(config.inputs, [s.name for s in specs])  # quiet.py
    for spec in specs:
        found = store.quiet.lookup(spec.name, now)
        if found is not None:
            rows.append(_quiet_row(spec, found, now))
            continue
        snap = store.snapshot(spec.name)
        current, state = snap.current, snap.state
        kept = kept_mod.undeployed(store, spec, state, config.directories)
        decision = plan.decide(spec, current, state, config.policy, now, False, snap.damaged,
                               kept, hold)  # fmt: skip
        reason = decision.reason
        if snap.problems:
            reason = f"{reason} ({'; '.join(snap.problems)})"
        fallback = current.fallback_note(config.ca.directory) if current else None
        if fallback:
            reason = f"{reason} ({fallback})"
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
                ca=current.ca or None if current else None,
            )
        )
    return rows


def _quiet_row(spec: CertSpec, found: QuietRow, now: dt.datetime) -> StatusRow:
    """A status row from what the last renew found (the same as reading the store)."""
    left = (found.not_after - now).total_seconds() / 86400 if found.not_after else None
    return StatusRow(name=spec.name, names=spec.names, release=found.release,
                     not_after=found.not_after, days_left=left, next_renewal=found.renew_at,
                     last_outcome=found.last_outcome, due=False,
                     reason=f"{found.reason} ({found.fallback})" if found.fallback
                     else found.reason, ca=found.ca)  # fmt: skip


def _readable(config: Config) -> None:
    """A reader that cannot read the store must not be told "due now" (no state seen):
    StoreError naming the directory and the way in (root, or `state_group`)."""
    import os

    from .errors import StoreError

    folder = config.state_dir
    if folder.exists() and not os.access(folder, os.R_OK | os.X_OK):
        import getpass

        how = "run as root" + (" or as a member of state_group" if config.state_group
                               is not None else ", or set state_group for readers")  # fmt: skip
        raise StoreError(f"cannot read the state directory {folder} as {getpass.getuser()}: "
                         f"{how}")  # fmt: skip
