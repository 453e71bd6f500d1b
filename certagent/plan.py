"""Pure renewal decisions: is this certificate due now, and why.

Side effects: none. `now` is an argument; nothing here reads a clock, a file or
the network, so a table of cases tests every branch.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from .model import CertSpec, CertState, Decision, Policy, Release, Undeployed

SHORT_LIFETIME = dt.timedelta(days=10)


def decide(
    spec: CertSpec,
    current: Release | None,
    state: CertState,
    policy: Policy,
    now: dt.datetime,
    force: bool = False,
    damaged: str | None = None,
    kept: Undeployed | None = None,
    hold: tuple[dt.datetime, str] | None = None,
) -> Decision:
    """Decide for one certificate; the first rule that applies wins. `damaged` says why
    the live release's key or certificate cannot be used (a new one is needed); `kept`
    is a certificate already issued for it that is not live (`usable` says whether it is
    deployed instead of ordering); `hold` is a CA-wide Retry-After (until, why)."""
    if kept is not None and usable(spec, kept, current, now):
        # Deploying what was issued needs no CA: neither its back-off nor its
        # Retry-After applies, and --force deploys it rather than ordering again.
        how = "forced: deploying it, no new order (--new-order orders one)" if force else (
            "deploying it now, no new order")  # fmt: skip
        return Decision(True, f"{kept.describe(spec.name)}; {how}", now)
    if state.retry_after is not None and now < state.retry_after:
        # The CA's own word (Retry-After on a 429/503) outranks everything, --force too.
        return Decision(
            False,
            f"the CA asked not to be asked again before {_fmt(state.retry_after)} "
            f"(Retry-After, after: {state.last_outcome or 'a refusal'})",
            state.retry_after,
        )
    if hold is not None and now < hold[0]:
        return Decision(False, f"{hold[1]} (Retry-After; --force does not override it)", hold[0])
    if force:
        return Decision(True, "forced (--force)", now)
    if current is not None and state.revoked is not None and state.revoked[0] == current.release_id:
        return Decision(True, f"the live certificate was revoked ({state.revoked[1]})", now)
    if damaged is not None and current is not None:
        return Decision(True, f"the live release {current.release_id} is damaged: {damaged}", now)
    changed = _changed(spec, current) if current is not None else None
    if changed:
        return Decision(True, changed, now)  # a new input: do not wait out old failures
    backoff_until = _backoff_until(state, policy)
    if backoff_until is not None and now < backoff_until:
        return Decision(
            False,
            f"{state.consecutive_failures} failed attempt(s), last: {state.last_outcome}; "
            f"backing off until {_fmt(backoff_until)} (--force overrides)",
            backoff_until,
        )
    if current is None:
        return Decision(True, "no certificate issued yet", now)
    if current.not_after <= now:
        return Decision(True, f"expired at {_fmt(current.not_after)}", now)
    renew_at = renewal_time(spec.name, current, state, policy)
    if now >= renew_at:
        return Decision(True, f"{_why_time(state)} since {_fmt(renew_at)}", renew_at)
    return Decision(
        False,
        f"valid until {_fmt(current.not_after)}; {_why_time(state)} at {_fmt(renew_at)}",
        renew_at,
    )


def usable(spec: CertSpec, kept: Undeployed, current: Release | None, now: dt.datetime) -> bool:
    """Is an issued certificate that is not live worth deploying instead of ordering?
    It must be for the same inputs (names, key type, profile), still valid, and newer
    than what is live. (Whether it is from the configured CA is the caller's check.)"""
    same = (
        set(kept.names) == set(spec.names)
        and kept.key_type == spec.key_type
        and kept.profile == spec.profile
    )
    newer = current is None or (
        kept.not_after >= current.not_after and kept.ref != current.release_id
    )
    return same and newer and kept.not_after > now


# What `config validate` assumes a certificate lives when none was issued yet: a profile
# a CA names for short lives (Let's Encrypt's "shortlived": 160 hours), else 90 days.
PROFILE_LIFETIMES = {"shortlived": dt.timedelta(hours=160)}
USUAL_LIFETIME = dt.timedelta(days=90)
MIN_RUNS = 2  # runs between the renewal time and the expiry: one may fail


def cadence_problem(name: str, lifetime: dt.timedelta, policy: Policy) -> str | None:
    """A warning when certagent does not run often enough for a certificate of this
    lifetime: fewer than MIN_RUNS runs between its renewal time and its expiry."""
    left = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    left -= lifetime * policy.jitter  # the earliest renewal time is no later than this
    every = dt.timedelta(seconds=policy.run_every)
    if left >= every * MIN_RUNS:
        return None
    runs = max(0, int(left / every))
    return (
        f"{name}: a certificate of {_span(lifetime)} is renewed with about {_span(left)} "
        f"left, which at one run every {_span(every)} (policy.run_every) gives {runs} "
        f"run(s) before it expires; run certagent at least every {_span(left / MIN_RUNS)} "
        "(the timer's OnCalendar, the cron line) and set policy.run_every to match"
    )


def _span(d: dt.timedelta) -> str:
    hours = d.total_seconds() / 3600
    return f"{hours / 24:g} d" if hours >= 48 else f"{hours:.3g} h"


def renewal_time(name: str, current: Release, state: CertState, policy: Policy) -> dt.datetime:
    """When this certificate should renew, before any failure backoff.

    The CA's ARI window wins when it has one (RFC 9773 section 4.2); a stable
    point inside it is chosen so that repeated runs agree. Otherwise renew when
    1/3 of the lifetime is left (1/2 for short-lived certificates), moved earlier
    by a stable share of `policy.jitter` so that a fleet does not renew at once.
    """
    share = _stable_share(name, current.fingerprint_sha256)
    if state.window is not None:
        span = state.window.end - state.window.start
        return state.window.start + span * share
    lifetime = current.not_after - current.not_before
    left = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return current.not_after - left - lifetime * policy.jitter * share


def _changed(spec: CertSpec, current: Release) -> str | None:
    if set(spec.names) != set(current.names):
        added = sorted(set(spec.names) - set(current.names))
        removed = sorted(set(current.names) - set(spec.names))
        parts = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
        return f"names changed ({', '.join(parts)})"
    if spec.key_type != current.key_type:
        return f"key type changed ({current.key_type.value} -> {spec.key_type.value})"
    if spec.profile != current.profile:
        return f"profile changed ({current.profile or 'none'} -> {spec.profile or 'none'})"
    return None


def _backoff_until(state: CertState, policy: Policy) -> dt.datetime | None:
    """Exponential backoff after failed runs, so a broken setup does not hammer the CA."""
    failures = state.consecutive_failures
    if failures <= 0 or state.last_attempt is None or policy.failure_backoff == 0:
        return None
    # Bounded at any failure count: the exponent stops long before a float could
    # overflow, and the delay never exceeds max_backoff (a CA outage of any length).
    seconds = min(policy.failure_backoff * 2.0 ** min(failures - 1, 64), policy.max_backoff)
    try:
        return state.last_attempt + dt.timedelta(seconds=seconds)
    except OverflowError:  # a last_attempt at the end of time: no waiting on a bad date
        return None


def _stable_share(name: str, fingerprint: str) -> float:
    digest = hashlib.sha256(f"{name}\0{fingerprint}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _why_time(state: CertState) -> str:
    if state.window is None:
        return "renewal time"
    why = state.window.explanation_url
    return "inside the CA's renewal window" + (f" (the CA explains: {why})" if why else "")


def _fmt(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
