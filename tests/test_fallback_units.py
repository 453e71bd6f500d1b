"""Unit: a fallback CA (issue #25, item 3) with small issuers behind the port: which CA
is asked, with which profile and `replaces`, what the release, the order step, `status`
and `check`'s targets say, and which errors move on to the next CA."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from certagent import api, config
from certagent.errors import CAUnavailable, CAUnreachable, OrderFailed
from certagent.model import OrderOptions
from certagent.monitoring import check_targets
from certagent.store import Store

from .fakes import LocalIssuer

PREFERRED = "https://ca-a.invalid/dir"
FALLBACK = "https://ca-b.invalid/dir"


class Issuer(LocalIssuer):
    """A LocalIssuer with its own label that records what it was asked, and can fail."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.asked: list[OrderOptions] = []
        self.fail: OrderFailed | None = None

    def issue(self, csr_pem: bytes, solver, options: OrderOptions) -> bytes:  # type: ignore[no-untyped-def]
        self.asked.append(options)
        if self.fail is not None:
            raise self.fail
        return super().issue(csr_pem, solver, options)


def load(tmp_path: Path, profile: str = "") -> config.Config:
    text = textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca:
          - {{directory: {PREFERRED}}}
          - {{directory: {FALLBACK}, profile: classic}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
        """)
    if profile:
        text += f"    profile: {profile}\n"
    return config.parse(text, tmp_path / "c.yaml")


def renew(cfg: config.Config, a: Issuer, b: Issuer, force: bool = True) -> api.Report:
    return api.renew(cfg, force=force, issuer=a, fallbacks=[b])


def test_the_preferred_ca_issues_when_it_can(tmp_path: Path) -> None:
    cfg = load(tmp_path, profile="shortlived")
    a, b = Issuer(PREFERRED), Issuer(FALLBACK)
    assert api.exit_status(renew(cfg, a, b)) == 0
    assert len(a.asked) == 1 and not b.asked
    assert a.asked[0].profile == "shortlived"  # the certificate's own, at the preferred CA
    live = Store(tmp_path / "state").current("www")
    assert live is not None and live.ca == PREFERRED and live.skipped is None


@pytest.mark.parametrize(
    "failure",
    [
        CAUnreachable(PREFERRED, "connection refused"),
        CAUnavailable(PREFERRED, "not sent: circuit breaker"),
        OrderFailed(
            PREFERRED, "rate limited", "urn:ietf:params:acme:error:rateLimited", status=429
        ),
        OrderFailed(
            PREFERRED, "refused", "urn:ietf:params:acme:error:rejectedIdentifier", status=400
        ),
        OrderFailed(PREFERRED, "oops", status=500),
    ],
    ids=["unreachable", "breaker", "rate-limited", "rejected", "5xx"],
)
def test_an_unusable_preferred_ca_is_skipped_and_said(tmp_path: Path, failure: OrderFailed) -> None:
    cfg = load(tmp_path, profile="shortlived")
    a, b = Issuer(PREFERRED), Issuer(FALLBACK)
    a.fail = failure
    report = renew(cfg, a, b)
    assert api.exit_status(report) == 0, report.results[0].error
    assert b.asked[0].profile == "classic"  # the fallback CA orders its own profile
    live = Store(tmp_path / "state").current("www")
    assert live is not None and live.ca == FALLBACK and live.skipped is not None
    order = next(s for s in report.results[0].steps if s.step == "order")
    assert f"ordered from {FALLBACK}" in order.detail and str(failure) in order.detail
    row = api.status(cfg)[0]
    assert row.ca == FALLBACK and "fallback CA" in row.reason and str(failure) in row.reason
    target = check_targets(cfg, [])[0]
    assert target.fallback is not None and FALLBACK in target.fallback


def test_a_validation_failure_is_not_tried_elsewhere(tmp_path: Path) -> None:
    """Another CA would reach the same web server: no second order, the error stands."""
    cfg = load(tmp_path)
    a, b = Issuer(PREFERRED), Issuer(FALLBACK)
    a.fail = OrderFailed(PREFERRED, "validation of www.example.test failed: 404",
                         "urn:ietf:params:acme:error:unauthorized", status=403)  # fmt: skip
    report = renew(cfg, a, b)
    assert api.exit_status(report) == 1 and not b.asked
    assert "404" in (report.results[0].error or "")


def test_when_no_ca_can_issue_the_most_telling_error_stands(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    a, b = Issuer(PREFERRED), Issuer(FALLBACK)
    a.fail = CAUnavailable(PREFERRED, "not sent: its Retry-After holds")
    b.fail = OrderFailed(FALLBACK, "refused", "urn:ietf:params:acme:error:rejectedIdentifier",
                         status=400)  # fmt: skip
    report = renew(cfg, a, b)
    error = report.results[0].error or ""
    assert api.exit_status(report) == 1
    assert error.startswith(f"CA {FALLBACK}") and "Retry-After holds" in error
    b.fail = CAUnavailable(FALLBACK, "not sent: circuit breaker")  # nothing was sent anywhere
    report = renew(cfg, a, b)
    assert report.results[0].outcome.value == "skipped"


def test_replaces_goes_only_to_the_ca_that_issued_the_certificate(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    a, b = Issuer(PREFERRED), Issuer(FALLBACK)
    a.fail = CAUnreachable(PREFERRED, "connection refused")
    renew(cfg, a, b)  # issued by the fallback
    a.fail = None
    renew(cfg, a, b)  # the preferred is back: it issues, without `replaces`
    assert a.asked[-1].replaces is None
    live = Store(tmp_path / "state").current("www")
    assert live is not None and live.ca == PREFERRED
    renew(cfg, a, b)  # now the preferred replaces its own
    assert a.asked[-1].replaces is not None
    assert [o.replaces is not None for o in b.asked] == [False]


def test_a_ca_listed_twice_is_refused(tmp_path: Path) -> None:
    from certagent.errors import ConfigError

    text = textwrap.dedent(f"""\
        state_dir: {tmp_path}
        ca: [{{directory: {PREFERRED}}}, {{directory: {PREFERRED}}}]
        certificates:
          www: {{names: [www.example.test], challenge: {{type: http-01, webroot: {tmp_path}}}}}
        """)
    with pytest.raises(ConfigError, match="listed twice"):
        config.parse(text, tmp_path / "c.yaml")
