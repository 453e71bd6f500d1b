"""Acceptance: dns-persist-01 (issue #25, item 4; draft-ietf-acme-dns-persist) against
acme2certifier, which implements the draft's validation, and a real BIND serving the
standing `_validation-persist` record: `account show` prints the record to publish; an
order before it is published is refused by certagent's own check of the authoritative
server (the CA never asked to validate); once published, certificates are issued with
no DNS credentials configured, a wildcard too (policy=wildcard)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from certagent import api, lifecycle
from certagent.store import Store
from testbed import netns
from testbed.a2c import Acme2Certifier
from testbed.bind import Bind

pytestmark = pytest.mark.integration

BIND_HOST = "127.0.0.1"  # port 53 in the test's namespace, where the CA resolves


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Acme2Certifier, Bind]]:
    if not netns.can_enter():
        pytest.skip("acme2certifier resolves on port 53: needs root for a private namespace")
    bind = Bind(tmp_path / "bind", host=BIND_HOST, port=53)
    ca = Acme2Certifier(tmp_path / "a2c", dns_server=BIND_HOST, challtestsrv=False,
                        dns_persist=True, caa_identities=("ca.a2c.test",))  # fmt: skip
    try:  # stopped whatever happens, a start that failed half-way included
        bind.start()
        ca.start()
        yield ca, bind
    finally:
        ca.stop()
        bind.stop()


def write(tmp_path: Path, ca: Acme2Certifier, names: list[str]) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {"directory": ca.directory_url, "timeout": 10, "contact": ["ops@example.test"]},
        "certificates": {"www": {
            "names": names,
            "challenge": {"type": "dns-persist-01", "nameservers": [f"{BIND_HOST}:53"]},
        }},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def publish(bind: Bind, line: str) -> None:
    """`NAME IN TXT "VALUE"`, as `account show` prints it, published as an operator would."""
    name, _, rest = line.partition(" IN TXT ")
    bind.add_txt(name, rest.strip('"'))


def sans(tmp_path: Path) -> list[str]:
    live = Store(tmp_path / "state").current("www")
    assert live is not None
    cert = x509.load_pem_x509_certificate((live.path / "cert.pem").read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(alt.get_values_for_type(x509.DNSName))


def test_a_standing_record_issues_without_dns_credentials(
    tmp_path: Path, servers: tuple[Acme2Certifier, Bind]
) -> None:
    ca, bind = servers
    config = api.load_config(str(write(tmp_path, ca, ["www.example.test"])))
    shown = lifecycle.account(config, "show").details
    (line,) = shown["dns_persist_records"]  # type: ignore[misc]
    url = shown["url"]
    assert line == (f'_validation-persist.www.example.test. IN TXT '
                    f'"ca.a2c.test; accounturi={url}"')  # fmt: skip

    before = len(ca.requests())
    report = api.renew(config)  # not published yet: refused before the CA validates
    cert = report.results[0]
    assert api.exit_status(report) == 1
    assert "_validation-persist.www.example.test" in (cert.error or "")
    assert "account show" in (cert.error or "")
    challenged = [r for r in ca.requests()[before:] if "/chall" in str(r.get("path", ""))]
    assert not challenged, challenged

    publish(bind, line)
    report = api.renew(config, force=True)
    assert api.exit_status(report) == 0, report.results[0].error
    assert sans(tmp_path) == ["www.example.test"]


def test_a_wildcard_needs_the_wildcard_policy(
    tmp_path: Path, servers: tuple[Acme2Certifier, Bind]
) -> None:
    ca, bind = servers
    config = api.load_config(str(write(tmp_path, ca, ["example.test", "*.example.test"])))
    (line,) = lifecycle.account(config, "show").details["dns_persist_records"]  # type: ignore[misc]
    assert line.endswith('; policy=wildcard"')
    bind.add_txt("_validation-persist.example.test.", line.split('"')[1].replace(
        "; policy=wildcard", ""))  # fmt: skip
    report = api.renew(config)  # a record without the policy: refused by our own check
    assert api.exit_status(report) == 1 and "policy=wildcard" in (report.results[0].error or "")
    publish(bind, line)
    report = api.renew(config, force=True)
    assert api.exit_status(report) == 0, report.results[0].error
    assert sans(tmp_path) == ["*.example.test", "example.test"]
