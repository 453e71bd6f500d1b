"""Acceptance: ARI and profiles against acme2certifier (issue #14), a real ACME server
that offers renewalInfo and meta.profiles: renewalInfo is fetched again only after its
Retry-After; inside the window a renewal orders with `replaces` naming the certificate
it replaces (RFC 9773 section 5); a profile the directory offers is ordered."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certagent import api
from testbed import netns
from testbed.a2c import Acme2Certifier

from .conftest import OffsetClock

pytestmark = pytest.mark.integration


@pytest.fixture
def a2c(tmp_path: Path) -> Iterator[Acme2Certifier]:
    if not netns.can_enter():
        pytest.skip("acme2certifier validates on port 80 and resolves on :53: needs root")
    server = Acme2Certifier(tmp_path / "a2c").start()
    yield server
    server.stop()


def config(tmp_path: Path, a2c: Acme2Certifier, extra: str = "") -> Path:
    path = tmp_path / "certagent.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"ca: {{directory: '{a2c.directory_url}', contact: [ops@example.test], agree_tos: true,"
        " timeout: 10}\n"
        "policy: {order_timeout: 60, jitter: 0}\n"
        "certificates:\n"
        "  www:\n"
        "    names: [www.example.test]\n"
        f"{extra}"
        "    challenge: {type: http-01, standalone: {address: 127.0.0.1, port: 80}}\n"
    )
    return path


def ari_id(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big",
                                         signed=True)  # fmt: skip
    b64 = base64.urlsafe_b64encode
    return (
        f"{b64(aki.key_identifier or b'').decode().rstrip('=')}.{b64(serial).decode().rstrip('=')}"
    )


def orders(a2c: Acme2Certifier) -> list[dict[str, object]]:
    return [r["payload"] for r in a2c.requests()
            if r["method"] == "POST" and "neworder" in str(r["path"]).lower()]  # fmt: skip


def renewal_info_fetches(a2c: Acme2Certifier) -> int:
    return sum(1 for r in a2c.requests() if "renewal" in str(r["path"]).lower()
               and r["method"] == "GET")  # fmt: skip


def test_ari_window_retry_after_and_replaces(tmp_path: Path, a2c: Acme2Certifier, run) -> None:
    path = config(tmp_path, a2c)
    first = run("-c", str(path), "renew")
    assert first.code == 0, first.err
    (order,) = orders(a2c)
    assert "replaces" not in order  # a first issuance replaces nothing
    cert = (tmp_path / "state" / "certs" / "www" / "current" / "cert.pem").read_bytes()

    assert run("-c", str(path), "renew").code == 0  # fetches the window: not due yet
    fetched = renewal_info_fetches(a2c)
    assert fetched >= 1
    assert run("-c", str(path), "renew").code == 0
    assert renewal_info_fetches(a2c) == fetched  # not before its Retry-After
    status = json.loads(run("-c", str(path), "--json", "status").out)["certificates"][0]
    assert "renewal window" in status["reason"] and not status["due"]

    # Near the window's end: past the Retry-After and inside the window: renew, replacing
    state = json.loads((tmp_path / "state" / "certs" / "www" / "state.json").read_text())
    end = dt.datetime.fromisoformat(state["window"]["end"])
    assert state["window"]["next_check"] is not None  # the Retry-After, remembered
    cfg = api.load_config(str(path))
    offset = end - dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    report = api.renew(cfg, clock=OffsetClock(offset))
    assert report.results[0].outcome.value == "renewed", report.results[0].error
    assert "renewal window" in report.results[0].decision.reason
    renewal = orders(a2c)[-1]
    assert len(orders(a2c)) == 2 and renewal.get("replaces") == ari_id(cert)


def test_a_profile_the_ca_offers_is_ordered(tmp_path: Path, a2c: Acme2Certifier, run) -> None:
    path = config(tmp_path, a2c, "    profile: shortlived\n")
    result = run("-c", str(path), "renew")
    assert result.code == 0, result.err
    assert orders(a2c)[-1].get("profile") == "shortlived"
    path.write_text(path.read_text().replace("profile: shortlived", "profile: nosuch"))
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 1
    cert = json.loads(result.out)["certificates"][0]
    assert "offers no profile 'nosuch'" in cert["error"] and "shortlived" in cert["error"]
