"""Unit: certificates of any lifetime (issue #25): `check` judges each certificate by a
share of its own lifetime when that is sooner than the configured days, so a fresh
6-day or 6-hour certificate is OK and one with less than a third of its life left
warns; 90-day certificates are judged as before."""

from __future__ import annotations

import datetime as dt

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
