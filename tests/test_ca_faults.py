"""Acceptance: what a CA says on a bad day, and a wrong clock (issue #12).

A broken ACME server on loopback (testbed/brokenca.py) answers `{}` or HTML for its
directory, and 503/429 with a plain-text body and a Retry-After; a real pebble behind
it for the cases that recover. A clock ten minutes slow (faketime) against a real
pebble. Every case ends in a documented exit status with the reason named."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.brokenca import BrokenCA
from testbed.pebble import Pebble

from .conftest import ROOT, write_config

pytestmark = pytest.mark.integration


def broken_config(tmp_path: Path, ca: BrokenCA, names: tuple[str, ...] = ("aaa", "bbb")) -> Path:
    lines = [f"state_dir: {tmp_path / 'state'}",
             f"ca: {{directory: '{ca.url}', timeout: 5}}",
             "policy: {max_retry_after: 30, failure_backoff: 0}",
             "certificates:"]  # fmt: skip
    for n in names:
        challenge = "{type: http-01, standalone: {address: 127.0.0.1, port: 1}}"
        lines += [f"  {n}:", f"    names: [{n}.example.test]", f"    challenge: {challenge}"]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def renew_json(run, path: Path, *extra: str) -> tuple[int, dict[str, object], str]:  # type: ignore[no-untyped-def]
    result = run("-c", str(path), "--json", "renew", *extra)
    assert "internal error" not in result.err + result.out
    return result.code, json.loads(result.out), result.err


@pytest.mark.parametrize("mode,words", [("empty-directory", "directory does not offer"),
                                        ("html", "Content-Type: text/html")])  # fmt: skip
def test_a_directory_that_is_not_acme_is_a_clear_failure(tmp_path: Path, run, mode: str,
                                                          words: str) -> None:  # fmt: skip
    ca = BrokenCA(mode).start()
    try:
        code, report, _ = renew_json(run, broken_config(tmp_path, ca))
    finally:
        ca.stop()
    assert code == 1
    certs = report["certificates"]
    assert isinstance(certs, list)
    assert all(words in c["error"] for c in certs), certs


def test_503_with_a_plain_body_is_retried_then_stops_the_run(tmp_path: Path, run) -> None:
    ca = BrokenCA("busy-post", status=503, retry_after="0").start()
    try:
        code, report, _ = renew_json(run, broken_config(tmp_path, ca))
    finally:
        ca.stop()
    assert code == 1
    # The certificates are worked on concurrently: whichever reached the CA first met
    # the outage, and the other sent nothing into it.
    certs = sorted(report["certificates"], key=lambda c: c["error_code"] == "ca-unavailable")  # type: ignore[arg-type]
    first, second = certs
    assert first["error_code"] == "ca-busy" and "503" in first["error"]
    assert ca.hits["/account"] == 4  # the first try and three retries, Retry-After honoured
    # no second order into a CA-wide outage: skipped, not failed (no back-off of its own)
    assert second["error_code"] == "ca-unavailable" and "not sent" in second["error"]
    assert second["outcome"] == "skipped"


def test_a_long_retry_after_is_not_waited_for_and_is_named(tmp_path: Path, run) -> None:
    ca = BrokenCA("busy-post", status=503, retry_after="7200").start()
    try:
        code, report, _ = renew_json(run, broken_config(tmp_path, ca, ("aaa",)))
    finally:
        ca.stop()
    assert code == 1
    (only,) = report["certificates"]  # type: ignore[misc]
    assert "Retry-After: 7200" in only["error"]
    assert ca.hits["/account"] == 1


def test_429_on_the_account_stops_every_certificate_of_the_run(tmp_path: Path, run) -> None:
    """The account is every certificate's: its 429 with Retry-After is the CA's word to
    all of them (issue #23). A 429 on one order is that order's (test_ca_proxy.py)."""
    ca = BrokenCA("busy-post", status=429, retry_after="0").start()
    try:
        code, report, _ = renew_json(run, broken_config(tmp_path, ca))
    finally:
        ca.stop()
    assert code == 1
    assert ca.hits["/account"] == 4  # one certificate's tries; the other sent nothing
    codes = sorted(c["error_code"] for c in report["certificates"])  # type: ignore[union-attr]
    assert codes == ["ca-busy", "ca-unavailable"]


def test_a_busy_directory_is_waited_out_then_pebble_issues(
    tmp_path: Path, run, pebble: Pebble
) -> None:
    upstream = ssl.create_default_context(cafile=str(pebble.tls_root))
    ca = BrokenCA("busy-directory", fail_first=2, upstream=pebble.directory_url,
                  upstream_ctx=upstream).start()  # fmt: skip
    try:
        path = write_config(tmp_path, pebble, directory=ca.url)
        code, _, err = renew_json(run, path)
    finally:
        ca.stop()
    assert code == 0, err
    assert ca.hits["/dir"] == 3


@pytest.mark.skipif(shutil.which("faketime") is None, reason="make deps installs faketime")
def test_a_slow_clock_is_named_and_the_certificate_kept_for_later(
    tmp_path: Path, pebble: Pebble
) -> None:
    path = write_config(tmp_path, pebble, {"www": ["www.example.test"]})
    text = (
        path.read_text() + "    deploy: {hook: ['true'], endpoints: none, endpoints_reason: test}\n"
    )
    path.write_text(
        text.replace("  order_timeout: 20\n", "  order_timeout: 20\n  failure_backoff: 0\n")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "certagent", "-c", str(path), "--json", "renew"]
    slow = subprocess.run(["faketime", "-f", "-10m", *base], capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip
    assert slow.returncode == 1, slow.stderr
    (cert,) = json.loads(slow.stdout)["certificates"]
    assert "clock is behind" in cert["error"] and "NTP" in cert["error"]
    assert "behind the CA's (check NTP)" in slow.stderr  # from the CA's Date header
    releases = list((tmp_path / "state" / "certs" / "www" / "releases").iterdir())
    assert len(releases) == 1  # the issued certificate is kept, not thrown away
    fixed = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120,
                           check=False)  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    (cert,) = json.loads(fixed.stdout)["certificates"]
    assert "no new order" in cert["decision"]["reason"]  # deployed, no second order
    assert not [s for s in cert["steps"] if s["step"] == "order"]


@pytest.mark.parametrize("status", [503, 429])
def test_a_retry_after_is_remembered_across_runs(tmp_path: Path, run, status: int) -> None:
    """Issue #14: the next cron run sends nothing to the CA before its Retry-After,
    whatever failure_backoff (0 here) or --force say."""
    ca = BrokenCA("busy-post", status=status, retry_after="7200").start()
    try:
        path = broken_config(tmp_path, ca)
        code, report, _ = renew_json(run, path)
        assert code == 1
        hits = dict(ca.hits)
        for extra in ((), ("--force",)):
            code, report, _ = renew_json(run, path, *extra)
            assert code == 0, report
            for cert in report["certificates"]:  # type: ignore[union-attr]
                assert cert["outcome"] == "skipped"
                assert "Retry-After" in cert["decision"]["reason"]
        assert ca.hits == hits  # not one request more
        plan = json.loads(run("-c", str(path), "--json", "plan").out)
        assert all(not c["decision"]["due"] for c in plan["certificates"])
    finally:
        ca.stop()
    if status == 503:
        holds = list((tmp_path / "state" / "accounts").glob("*/hold.json"))
        assert len(holds) == 1  # the CA-wide wait, for certificates added later too
