"""Acceptance: `certagent renew` against a real pebble (Debian package)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import verification

from certagent import api, wiring
from certagent.context import Issuer
from certagent.store import Store
from testbed.pebble import Pebble

from .conftest import OffsetClock, run_subprocess, write_config

pytestmark = pytest.mark.integration


def current_dir(tmp_path: Path, name: str = "www") -> Path:
    return (tmp_path / "state" / "certs" / name / "current").resolve()


def assert_valid_chain(release: Path, pebble: Pebble, name: str) -> None:
    """The release verifies against pebble's issuing root for the name (a real path check)."""
    roots = x509.load_pem_x509_certificates(pebble.issuing_roots())
    chain = x509.load_pem_x509_certificates((release / "fullchain.pem").read_bytes())
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(roots))
        .build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(chain[0], chain[1:])


def test_first_issuance_then_nothing_then_force(tmp_path: Path, pebble: Pebble, run) -> None:
    cfg = write_config(tmp_path, pebble)

    first = run("-c", str(cfg), "renew")
    assert first.code == 0, first.err
    assert "www: renewed (no certificate issued yet)" in first.out
    release = current_dir(tmp_path)
    assert_valid_chain(release, pebble, "www.example.test")
    assert stat.S_IMODE((release / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    account_keys = list((tmp_path / "state" / "accounts").glob("*/key.pem"))
    assert len(account_keys) == 1
    assert stat.S_IMODE(account_keys[0].stat().st_mode) == 0o600

    second = run("-c", str(cfg), "renew")
    assert (second.code, second.out, second.err) == (0, "", "")  # cron stays quiet
    assert current_dir(tmp_path) == release

    forced = run("-c", str(cfg), "renew", "--force", "--json")
    assert forced.code == 0
    report = json.loads(forced.out)
    assert report["exit_status"] == 0
    assert [c["outcome"] for c in report["certificates"]] == ["renewed"]
    assert current_dir(tmp_path) != release
    # the account was reused, not registered again
    assert list((tmp_path / "state" / "accounts").glob("*/key.pem")) == account_keys
    history = (tmp_path / "state" / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["certificates"][0]["outcome"] for h in history] == [
        "renewed",
        "skipped",
        "renewed",
    ]


def test_short_lifetime_falls_due(tmp_path: Path, make_pebble) -> None:
    server = make_pebble(tmp_path / "pebble", validity_seconds=120).start()
    config = api.load_config(str(write_config(tmp_path, server)))

    issued = api.renew(config)
    assert [r.outcome.value for r in issued.results] == ["renewed"]
    lifetime = issued.results[0].not_after - dt.datetime.now(dt.UTC)
    assert lifetime < dt.timedelta(seconds=125)

    assert api.renew(config).results[0].outcome.value == "skipped"
    # Half of a 120 s lifetime later the certificate is due; the clock is moved, not slept.
    later = api.renew(config, clock=OffsetClock(dt.timedelta(seconds=61)))
    result = later.results[0]
    assert result.outcome.value == "renewed", result
    assert "renewal time since" in result.decision.reason


def test_bad_nonces_twenty_percent(tmp_path: Path, make_pebble, run) -> None:
    server = make_pebble(tmp_path / "pebble", nonce_reject=20).start()
    certs = {f"c{i}": [f"c{i}.example.test"] for i in range(5)}
    cfg = write_config(tmp_path, server, certs)
    result = run("-c", str(cfg), "renew")
    assert result.code == 0, result.err
    assert result.out.count(": renewed") == 5
    log = (tmp_path / "pebble" / "pebble.log").read_text()
    assert "Configured to reject 20% of good nonces" in log


def test_ca_unreachable_leaves_current_untouched(tmp_path: Path, pebble: Pebble, run) -> None:
    cfg = write_config(tmp_path, pebble)
    assert run("-c", str(cfg), "renew").code == 0
    before = current_dir(tmp_path)
    fingerprint = (before / "cert.pem").read_bytes()

    dead = "https://127.0.0.1:9/dir"
    cfg = write_config(tmp_path, pebble, directory=dead)
    result = run("-c", str(cfg), "renew", "--force")
    assert result.code == 1
    assert f"CA {dead}: cannot reach the CA: Connection refused" in result.err
    assert current_dir(tmp_path) == before
    assert (before / "cert.pem").read_bytes() == fingerprint
    assert Store(tmp_path / "state").read_state("www").consecutive_failures == 1


def test_ca_error_reaches_the_user_with_problem_type(tmp_path: Path, pebble: Pebble, run) -> None:
    cfg = write_config(tmp_path, pebble, {"bad": ["blocked.test"]})
    result = run("-c", str(cfg), "renew", "--json")
    assert result.code == 1
    cert = json.loads(result.out)["certificates"][0]
    assert cert["outcome"] == "failed_before_swap"
    assert "urn:ietf:params:acme:error:rejectedIdentifier" in cert["error"]
    assert "blocked.test" in cert["error"]
    assert not (tmp_path / "state" / "certs" / "bad" / "current").exists()


def test_failed_validation_names_the_problem_and_cleans_up(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    # The solver listens where pebble does not look: pebble's validation fails.
    from testbed.proc import free_port

    cfg = write_config(tmp_path, pebble, {"www": ["nowhere.example.test"]}, port=free_port())
    result = run("-c", str(cfg), "renew")
    assert result.code == 1
    assert "validation of nowhere.example.test failed" in result.err
    assert "urn:ietf:params:acme:error:connection" in result.err


def test_failure_backs_off_until_forced(tmp_path: Path, pebble: Pebble, run) -> None:
    cfg = write_config(tmp_path, pebble, directory="https://127.0.0.1:9/dir")
    assert run("-c", str(cfg), "renew").code == 1
    again = run("-c", str(cfg), "plan")
    assert again.code == 0
    assert "www: not due: 1 failed attempt(s), last: failed_before_swap; backing off" in again.out
    assert "www: due: forced (--force)" in run("-c", str(cfg), "plan", "--force").out
    assert run("-c", str(cfg), "renew").code == 0  # backing off is not a failure


class _RacingIssuer:
    """Wraps the real ACME issuer; while the first run holds the lock, start a second run."""

    def __init__(self, inner: Issuer, cfg: Path) -> None:
        self.inner = inner
        self.cfg = cfg
        self.second: tuple[int, str] | None = None

    @property
    def label(self) -> str:
        return self.inner.label

    def issue(self, csr_pem: bytes, solver, options) -> bytes:  # type: ignore[no-untyped-def]
        proc = run_subprocess("-c", str(self.cfg), "renew", "--force")
        self.second = (proc.returncode, proc.stderr)
        return self.inner.issue(csr_pem, solver, options)

    def renewal_window(self, cert_pem: bytes):  # type: ignore[no-untyped-def]
        return self.inner.renewal_window(cert_pem)


def test_two_concurrent_runs_one_exits_75(tmp_path: Path, pebble: Pebble) -> None:
    from certagent.acme_issuer import AcmeIssuer
    from certagent.system import SystemClock

    cfg = write_config(tmp_path, pebble)
    config = api.load_config(str(cfg))
    store = Store(config.state_dir)
    clock = SystemClock()
    real = AcmeIssuer(
        config.ca,
        config.policy,
        store.account_dir(config.ca.directory),
        wiring.trust_bundle(config.ca, store.root),
        clock.sleep,
        clock.monotonic,
    )
    racing = _RacingIssuer(real, cfg)
    report = api.renew(config, issuer=racing)
    assert report.results[0].outcome.value == "renewed"
    assert racing.second is not None
    code, err = racing.second
    assert code == 75, err
    assert "another certagent run holds" in err


def test_state_dir_permissions_and_no_secret_in_output(tmp_path: Path, pebble: Pebble, run) -> None:
    cfg = write_config(tmp_path, pebble)
    result = run("-c", str(cfg), "-vv", "renew")
    assert result.code == 0
    key = (current_dir(tmp_path) / "privkey.pem").read_text()
    body = "".join(key.splitlines()[1:-1])
    assert body[:40] not in result.err + result.out
    for dirpath, _dirs, _files in os.walk(tmp_path / "state"):
        path = Path(dirpath)
        if "releases" in path.parts and path.name != "releases":
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
