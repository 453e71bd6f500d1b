"""Unit: the pure renewal decision, as a table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from certagent import plan
from certagent.model import (
    CertSpec,
    CertState,
    Http01Webroot,
    KeyType,
    Policy,
    Release,
    RenewalWindow,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
SPEC = CertSpec("www", ("www.example.test",), KeyType.EC_P256, Http01Webroot(Path("/srv")))
NO_JITTER = Policy(jitter=0.0)


def release(
    lifetime: dt.timedelta,
    names: tuple[str, ...] = ("www.example.test",),
    key_type: KeyType = KeyType.EC_P256,
) -> Release:
    return Release("www", "r1", Path("/x"), names, key_type, T0, T0 + lifetime, "ab" * 32, "CN=CA")


CASES = [
    # (id, current, state, now, force, due, reason fragment)
    ("none", None, CertState(), T0, False, True, "no certificate issued yet"),
    ("fresh 90d", release(90 * DAY), CertState(), T0 + DAY, False, False, "valid until"),
    ("90d at 2/3", release(90 * DAY), CertState(), T0 + 60 * DAY, False, True, "renewal time"),
    (
        "90d just before 2/3",
        release(90 * DAY),
        CertState(),
        T0 + 59 * DAY,
        False,
        False,
        "renewal time at 2026-03-02",
    ),
    ("6d short: half", release(6 * DAY), CertState(), T0 + 3 * DAY, False, True, "renewal time"),
    ("6d short: before half", release(6 * DAY), CertState(), T0 + 2 * DAY, False, False, ""),
    ("expired", release(90 * DAY), CertState(), T0 + 91 * DAY, False, True, "expired at"),
    ("forced", release(90 * DAY), CertState(), T0 + DAY, True, True, "forced"),
    (
        "names changed",
        release(90 * DAY, names=("old.example.test",)),
        CertState(),
        T0 + DAY,
        False,
        True,
        "names changed (+www.example.test, -old.example.test)",
    ),
    (
        "key changed",
        release(90 * DAY, key_type=KeyType.RSA_2048),
        CertState(),
        T0 + DAY,
        False,
        True,
        "key type changed (rsa-2048 -> ec-p256)",
    ),
    (
        "ARI window reached",
        release(90 * DAY),
        CertState(window=RenewalWindow(T0 + 10 * DAY, T0 + 10 * DAY)),
        T0 + 10 * DAY,
        False,
        True,
        "inside the CA's renewal window",
    ),
    (
        "ARI window later than 2/3",
        release(90 * DAY),
        CertState(window=RenewalWindow(T0 + 80 * DAY, T0 + 80 * DAY)),
        T0 + 61 * DAY,
        False,
        False,
        "CA's renewal window at",
    ),
    (
        "backoff after failure",
        release(90 * DAY),
        CertState("failed_before_swap", T0 + 60 * DAY, 1),
        T0 + 60 * DAY + dt.timedelta(minutes=30),
        False,
        False,
        "1 failed attempt(s)",
    ),
    (
        "backoff over",
        release(90 * DAY),
        CertState("failed_before_swap", T0 + 60 * DAY, 1),
        T0 + 60 * DAY + dt.timedelta(hours=2),
        False,
        True,
        "renewal time",
    ),
    (
        "backoff doubles",
        release(90 * DAY),
        CertState("failed_before_swap", T0 + 60 * DAY, 3),
        T0 + 60 * DAY + dt.timedelta(hours=3),
        False,
        False,
        "until 2026-03-02 04:00:00",
    ),
    (
        "backoff before first issuance",
        None,
        CertState("failed_before_swap", T0, 1),
        T0 + dt.timedelta(minutes=5),
        False,
        False,
        "backing off",
    ),
    (
        "names changed beats backoff",
        release(90 * DAY, names=("a.example.test",)),
        CertState("failed_before_swap", T0, 4),
        T0 + DAY,
        False,
        True,
        "names changed",
    ),
]


@pytest.mark.parametrize(
    ("current", "state", "now", "force", "due", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decision_table(
    current: Release | None,
    state: CertState,
    now: dt.datetime,
    force: bool,
    due: bool,
    fragment: str,
) -> None:
    decision = plan.decide(SPEC, current, state, NO_JITTER, now, force)
    assert decision.due is due, decision
    assert fragment in decision.reason


def test_jitter_is_stable_and_spreads_a_fleet() -> None:
    policy = Policy(jitter=0.05)
    current = release(90 * DAY)
    times = {plan.renewal_time(f"c{i}", current, CertState(), policy) for i in range(50)}
    assert len(times) == 50  # spread, not one minute for all
    base = T0 + 60 * DAY
    assert all(base - 90 * DAY * 0.05 <= t <= base for t in times)
    again = {plan.renewal_time(f"c{i}", current, CertState(), policy) for i in range(50)}
    assert times == again  # stable across runs: no randomness at decision time


@pytest.mark.parametrize("failures", [1, 2, 36, 37, 1000, 10**6, 2**62])
def test_backoff_is_capped_at_any_failure_count(failures: int) -> None:
    """Five weeks of a CA outage at 1h used to overflow timedelta (issue #12)."""
    policy = Policy(failure_backoff=3600, max_backoff=6 * 3600, jitter=0.0)
    state = CertState(last_outcome="failed_before_swap", last_attempt=T0,
                      consecutive_failures=failures)  # fmt: skip
    current = release(90 * DAY)
    waiting = plan.decide(SPEC, current, state, policy, T0 + dt.timedelta(minutes=1))
    assert not waiting.due and "backing off" in waiting.reason
    expected = dt.timedelta(hours=min(2 ** min(failures - 1, 10), 6))
    assert waiting.renew_at == T0 + expected
    after = plan.decide(SPEC, current, state, policy, T0 + expected + dt.timedelta(seconds=1))
    assert "backing off" not in after.reason


def test_backoff_at_the_end_of_time_does_not_overflow() -> None:
    late = dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(minutes=1)
    state = CertState(last_attempt=late, consecutive_failures=3, last_outcome="x")
    plan.decide(SPEC, release(90 * DAY), state, Policy(), T0)  # no OverflowError


def test_the_cas_explanation_is_in_the_reason() -> None:
    window = RenewalWindow(T0 + DAY, T0 + 2 * DAY, "https://ca.test/why")
    state = CertState(window=window)
    decision = plan.decide(SPEC, release(90 * DAY), state, NO_JITTER, T0 + 3 * DAY)
    assert decision.due and "the CA explains: https://ca.test/why" in decision.reason
