"""Acceptance: Postfix and Dovecot (issue #26, item 3), from Debian's packages as private
instances on loopback ports: one certificate linked to the two files both servers read,
`postconf -n && postfix check && doveconf -n` as the config test, `postfix reload &&
doveadm reload` as the reload, verified by certagent over STARTTLS (SMTP, submission,
IMAP) and implicit TLS (SMTPS, IMAPS); a typo in main.cf refused before ordering in
Postfix's words."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent import api
from certagent.store import Store
from testbed.mail import Mail
from testbed.pebble import Pebble

pytestmark = pytest.mark.integration

NAME = "mail.example.test"


@pytest.fixture
def mail() -> Iterator[Mail]:
    """Under /tmp with 0755: postfix and dovecot drop to their own users, who must be
    able to enter their directories (pytest's are 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="certagent-mail-", dir="/tmp"))
    base.chmod(0o755)
    server = Mail(base)
    try:
        yield server.start_postfix()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def write(tmp_path: Path, pebble: Pebble, mail: Mail, root: Path) -> Path:
    endpoints = [
        {"address": f"127.0.0.1:{mail.smtp}", "starttls": "smtp"},
        {"address": f"127.0.0.1:{mail.submission}", "starttls": "smtp"},
        f"127.0.0.1:{mail.smtps}",
    ]
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {"directory": pebble.directory_url, "agree_tos": True, "timeout": 5,
               "trust_roots": [str(pebble.tls_root)]},
        "certificates": {"mail": {
            "names": [NAME],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": pebble.http_port}},
            "deploy": {
                "links": [{"file": "fullchain", "dest": str(mail.tls / "fullchain.pem")},
                          {"file": "key", "dest": str(mail.tls / "privkey.pem")}],
                "test": {"shell": mail.test_shell()},
                "hook": {"shell": mail.reload_shell()},
                "endpoints": endpoints,
                "trust_roots": [str(root)],
                "verify_timeout": 15,
            },
        }},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_postfix_and_dovecot_over_starttls_and_implicit_tls(
    tmp_path: Path, pebble: Pebble, mail: Mail
) -> None:
    root = tmp_path / "issuing-roots.pem"
    root.write_bytes(pebble.issuing_roots(0))
    path = write(tmp_path, pebble, mail, root)
    report = api.renew(api.load_config(str(path)))  # Postfix alone: it runs without one
    assert api.exit_status(report) == 0, report.results[0].error
    mail.start_dovecot()  # Dovecot needs the files: configured once they exist
    cfg = json.loads(path.read_text())
    cfg["certificates"]["mail"]["deploy"]["endpoints"] += [
        {"address": f"127.0.0.1:{mail.imap}", "starttls": "imap"},
        f"127.0.0.1:{mail.imaps}",
    ]
    path.write_text(json.dumps(cfg))
    config = api.load_config(str(path))
    first = Store(tmp_path / "state").current("mail")
    report = api.renew(config, force=True)
    result = report.results[0]
    assert api.exit_status(report) == 0, result.error
    live = Store(tmp_path / "state").current("mail")
    assert live is not None and first is not None and live != first
    verify = next(s for s in result.steps if s.step == "verify")
    assert verify.ok and verify.detail.count("127.0.0.1:") == 5, verify
    found = api.check(config)  # the five endpoints, over STARTTLS and implicit TLS
    assert found.state.name == "OK", found.text
    assert all(f["current_release"] for f in found.to_json()["endpoints"]), found.text

    main_cf = mail.postfix_dir / "main.cf"
    main_cf.write_text(main_cf.read_text() + "smtpd_tls_security_level may\n")  # no =
    report = api.renew(config, force=True)
    error = report.results[0].error or ""
    assert api.exit_status(report) == 1 and report.results[0].error_code == "precheck"
    assert "missing '=' after attribute name" in error and "main.cf, line" in error, error
    assert Store(tmp_path / "state").current("mail") == live
