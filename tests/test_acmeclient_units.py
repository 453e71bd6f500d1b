"""Unit: certagent's ACME client against an in-process ACME server (tests/acmefake.py)
through its transport port: no socket. What the real-server tests cannot make a CA do
on demand (a nonce refused three times, a 429 with a Retry-After, a 409 alreadyReplaced,
a CA that answers 500, a clock ten minutes off) is done here, request by request."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from certagent import crypto
from certagent.acme_issuer import AcmeIssuer, ProfileUnknown, TermsNotAgreed
from certagent.errors import CAUnavailable, OrderFailed
from certagent.model import CASpec, KeyType, OrderOptions, Policy
from tests.acmefake import DIRECTORY, FakeAcme, always, once, problem


class Solver:
    kind = "http-01"

    def __init__(self) -> None:
        self.presented: list[tuple[str, str]] = []
        self.cleaned: list[str] = []

    def present(self, domain: str, token: str, validation: str) -> None:
        assert validation.startswith(token + ".")  # the key authorization
        self.presented.append((domain, token))

    def ready(self) -> None:
        pass

    def cleanup(self, domain: str, token: str) -> None:
        self.cleaned.append(domain)

    def finish(self) -> None:
        pass


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def issuer(fake: FakeAcme, folder: Path, sleeps: Sleeps | None = None, **ca: object) -> AcmeIssuer:
    sleeps = sleeps or Sleeps()
    spec = CASpec(DIRECTORY, **ca)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    return AcmeIssuer(spec, Policy(), folder, None, sleeps.sleep, sleeps.monotonic, wire=fake)


def csr(*names: str) -> bytes:
    return crypto.make_csr(crypto.generate_key(KeyType.EC_P256), names)


def test_an_order_end_to_end_signs_in_once(tmp_path: Path) -> None:
    fake = FakeAcme()
    solver = Solver()
    acme = issuer(fake, tmp_path / "acct")
    chain = acme.issue(csr("www.example.test", "example.test"), lambda name: solver)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["example.test", "www.example.test"]
    assert sorted(d for d, _ in solver.presented) == ["example.test", "www.example.test"]
    assert sorted(solver.cleaned) == ["example.test", "www.example.test"]
    assert (tmp_path / "acct" / "account.json").exists()
    again = issuer(fake, tmp_path / "acct")  # a new run: the stored account, no newAccount
    again.issue(csr("www.example.test"), lambda name: Solver())
    assert fake.count("/new-account") == 1
    assert fake.count("/new-order") == 2


def test_refused_nonces_are_retried(tmp_path: Path) -> None:
    fake = FakeAcme()
    for _ in range(3):
        fake.faults.append(once("/new-order", problem(400, "badNonce", "stale")))
    issuer(fake, tmp_path).issue(csr("www.example.test"), lambda name: Solver())
    assert fake.count("/new-order") == 4


def test_a_busy_ca_is_waited_out_within_the_bound(tmp_path: Path) -> None:
    fake = FakeAcme()
    fake.faults.append(once("/new-order", problem(429, "rateLimited", "slow down",
                                                  **{"Retry-After": "7"})))  # fmt: skip
    sleeps = Sleeps()
    issuer(fake, tmp_path, sleeps).issue(csr("www.example.test"), lambda name: Solver())
    assert any(6.5 < wait <= 7 for wait in sleeps.slept), sleeps.slept


def test_a_retry_after_beyond_the_bound_is_carried_by_the_error(tmp_path: Path) -> None:
    fake = FakeAcme()
    fake.faults.append(always("/new-order", problem(429, "rateLimited", "too many orders",
                                                    **{"Retry-After": "7200"})))  # fmt: skip
    before = dt.datetime.now(dt.UTC)
    with pytest.raises(OrderFailed) as caught:
        issuer(fake, tmp_path).issue(csr("www.example.test"), lambda name: Solver())
    exc = caught.value
    assert exc.status == 429 and exc.problem_type is not None
    assert exc.problem_type.endswith(":rateLimited")
    assert exc.retry_at is not None
    assert dt.timedelta(minutes=119) < exc.retry_at - before < dt.timedelta(minutes=121)
    assert fake.count("/new-order") == 1  # not hammered


def test_an_already_replaced_certificate_is_renewed_by_a_plain_order(tmp_path: Path) -> None:
    fake = FakeAcme()
    acme = issuer(fake, tmp_path)
    first = acme.issue(csr("www.example.test"), lambda name: Solver())
    acme.issue(csr("www.example.test"), lambda name: Solver(), OrderOptions(replaces=first))
    orders = [r.payload for r in fake.log if r.path == "/new-order"]
    assert "replaces" in orders[1]
    acme.issue(csr("www.example.test"), lambda name: Solver(), OrderOptions(replaces=first))
    orders = [r.payload for r in fake.log if r.path == "/new-order"]
    assert "replaces" in orders[2] and "replaces" not in orders[3]  # 409, then plain


def test_a_profile_the_ca_does_not_offer_is_refused_before_ordering(tmp_path: Path) -> None:
    fake = FakeAcme(profiles={"classic": "90 days", "shortlived": "6 days"})
    acme = issuer(fake, tmp_path)
    with pytest.raises(ProfileUnknown, match="offers: classic, shortlived"):
        acme.issue(csr("www.example.test"), lambda name: Solver(), OrderOptions("tlsserver"))
    assert fake.count("/new-order") == 0
    acme.issue(csr("www.example.test"), lambda name: Solver(), OrderOptions("shortlived"))
    assert [r.payload.get("profile") for r in fake.log if r.path == "/new-order"] == ["shortlived"]


def test_the_renewal_window_and_when_to_ask_again(tmp_path: Path) -> None:
    fake = FakeAcme()
    acme = issuer(fake, tmp_path)
    chain = acme.issue(csr("www.example.test"), lambda name: Solver())
    start = dt.datetime(2027, 1, 2, tzinfo=dt.UTC)
    fake.window = (start, start + dt.timedelta(hours=12))
    fake.ari_retry_after = 3600
    window = acme.renewal_window(chain)
    assert window is not None and window.start == start
    assert window.next_check is not None
    left = window.next_check - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)
    assert issuer(FakeAcme(ari=False), tmp_path / "b").renewal_window(chain) is None


def test_a_ca_that_answers_500_is_asked_no_more(tmp_path: Path) -> None:
    fake = FakeAcme()
    fake.faults.append(always("/", (500, {"Content-Type": "text/html"}, b"<h1>oops</h1>")))
    acme = issuer(fake, tmp_path)
    failures = 0
    while True:  # the breaker opens after a few 5xx answers
        try:
            acme.issue(csr("www.example.test"), lambda name: Solver())
        except CAUnavailable:
            break
        except OrderFailed as exc:
            assert "HTTP 500" in str(exc)
            failures += 1
            assert failures <= 3, "the breaker never opened"
    sent = len(fake.log)
    for _ in range(3):  # further certificates of the run: nothing is sent
        with pytest.raises(CAUnavailable):
            acme.issue(csr("www.example.test"), lambda name: Solver())
    assert len(fake.log) == sent
    later = issuer(fake, tmp_path)  # the next run: one request, a probe, and no more
    with pytest.raises(OrderFailed):
        later.issue(csr("www.example.test"), lambda name: Solver())
    with pytest.raises(CAUnavailable):
        later.issue(csr("www.example.test"), lambda name: Solver())
    assert len(fake.log) == sent + 1


def test_a_refused_identifier_is_said_with_the_cas_words(tmp_path: Path) -> None:
    fake = FakeAcme()
    fake.faults.append(always("/new-order", problem(
        400, "rejectedIdentifier", "192.0.2.10 is not allowed by policy")))  # fmt: skip
    with pytest.raises(OrderFailed) as caught:
        issuer(fake, tmp_path).issue(csr("192.0.2.10"), lambda name: Solver())
    text = str(caught.value)
    assert "192.0.2.10 is not allowed by policy" in text
    assert "profile: shortlived" in text  # what it takes to get an IP certificate


def test_an_account_the_ca_forgot_is_registered_again(tmp_path: Path) -> None:
    fake = FakeAcme()
    acme = issuer(fake, tmp_path)
    acme.issue(csr("www.example.test"), lambda name: Solver())
    fake.accounts.clear()  # a test CA restarted
    fake._by_key.clear()
    issuer(fake, tmp_path).issue(csr("www.example.test"), lambda name: Solver())
    assert fake.count("/new-account") == 2


def test_terms_of_service_are_agreed_only_by_the_operator(tmp_path: Path) -> None:
    fake = FakeAcme(terms="https://acme.test/terms")
    with pytest.raises(TermsNotAgreed, match="agree_tos"):
        issuer(fake, tmp_path / "a").issue(csr("www.example.test"), lambda name: Solver())
    assert not fake.accounts
    issuer(fake, tmp_path / "b", agree_tos=True).issue(
        csr("www.example.test"), lambda name: Solver()
    )
    assert len(fake.accounts) == 1


def test_revocation_and_deactivation(tmp_path: Path) -> None:
    fake = FakeAcme()
    acme = issuer(fake, tmp_path)
    chain = acme.issue(csr("www.example.test"), lambda name: Solver())
    acme.revoke(chain, 4)
    assert fake.revoked == [x509.load_pem_x509_certificates(chain)[0].serial_number]
    url = acme.deactivate()
    assert fake.accounts[url]["status"] == "deactivated"


def test_a_clock_minutes_off_the_cas_is_named(tmp_path: Path) -> None:
    fake = FakeAcme()
    fake.date = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)  # the CA is behind us
    acme = issuer(fake, tmp_path)
    acme.issue(csr("www.example.test"), lambda name: Solver())
    said = acme.clock_problem()
    assert said is not None and "ahead of the CA's" in said
