"""Unit: certificates of any lifetime (issue #25): `check` judges each certificate by a
share of its own lifetime when that is sooner than the configured days, so a fresh
6-day or 6-hour certificate is OK and one with less than a third of its life left
warns; 90-day certificates are judged as before."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from certagent.check import Checker, State, Target
from certagent.model import Endpoint
from testbed import pki

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CA = pki.make_ca("lifetime test CA")


def judge(life: dt.timedelta, left: dt.timedelta) -> tuple[State, str]:
    not_after = NOW + left
    pem, _ = pki.issue(CA, ["www.example.test"], not_after - life, not_after)
    cert = x509.load_pem_x509_certificate(pem)
    target = Target("www", Endpoint("127.0.0.1", 443, "www.example.test"), 14.0, 3.0)
    finding = Checker(5.0, NOW)._judge(target, cert, "ab" * 32)
    return finding.state, finding.message


DAY, HOUR = dt.timedelta(days=1), dt.timedelta(hours=1)


@pytest.mark.parametrize("life,left,state", [
    (90 * DAY, 80 * DAY, State.OK),
    (90 * DAY, 10 * DAY, State.WARNING),  # 14 days: as before
    (90 * DAY, 2 * DAY, State.CRITICAL),  # 3 days: as before
    (6 * DAY, 6 * DAY, State.OK),  # fresh 6-day: OK (was WARNING for its whole life)
    (6 * DAY, 3 * DAY, State.OK),
    (6 * DAY, 1.9 * DAY, State.WARNING),  # under a third of its life
    (6 * DAY, 0.9 * DAY, State.CRITICAL),  # under a sixth
    (6 * HOUR, 5 * HOUR, State.OK),  # a private step-ca's hours-long certificate
    (6 * HOUR, 1.5 * HOUR, State.WARNING),
    (6 * HOUR, 0.5 * HOUR, State.CRITICAL),
])  # fmt: skip
def test_thresholds_follow_the_lifetime(life: dt.timedelta, left: dt.timedelta,
                                        state: State) -> None:  # fmt: skip
    found, message = judge(life, left)
    assert found is state, message


def test_the_message_says_which_threshold_and_in_a_readable_unit() -> None:
    _, message = judge(6 * HOUR, 1.5 * HOUR)
    assert "expires in 90 minutes" in message and "33% of its 6.0 hours life" in message
    _, message = judge(90 * DAY, 10 * DAY)
    assert "warning at 14 days" in message


def test_config_validate_warns_when_runs_are_too_rare_for_the_lifetime(tmp_path: Path) -> None:
    """Issue #25: a 24-hour certificate renewed at half its life leaves 12 h, one run of
    the shipped 12-hour timer: warned, with the cadence it needs; a 6-day one is fine."""
    import datetime as dt

    from certagent import api, config, plan
    from certagent.model import Policy

    day = plan.cadence_problem("www", dt.timedelta(hours=24), Policy())
    assert day is not None and "policy.run_every" in day and "every 5.4 h" in day
    assert plan.cadence_problem("www", dt.timedelta(hours=24), Policy(run_every=4 * 3600)) is None
    assert plan.cadence_problem("www", dt.timedelta(hours=160), Policy()) is None
    assert plan.cadence_problem("www", dt.timedelta(days=90), Policy()) is None
    cfg = config.parse(
        f"state_dir: {tmp_path}\nca: {{directory: https://ca.invalid/dir}}\n"
        "policy: {run_every: 3d}\ncertificates:\n  www:\n    names: [www.example.test]\n"
        f"    profile: shortlived\n    challenge: {{type: http-01, webroot: {tmp_path}}}\n",
        tmp_path / "c.yaml",
    )
    (warning,) = api.validate(cfg)
    assert warning.startswith("www: a certificate of 6.66667 d")
