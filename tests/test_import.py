"""Acceptance: `certagent import certbot|lego` (issue #14) with lineages made by
Debian's certbot and lego against a real pebble: the account and the certificates
come over without a new account or a new issuance, nothing of the source changes, and
the next renewal orders with the imported account."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.pebble import Pebble

from .conftest import write_config
from .test_schemas import valid

pytestmark = pytest.mark.integration


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def certbot(pebble: Pebble, folder: Path, *names: str) -> None:
    if shutil.which("certbot") is None:
        pytest.fail("certbot is not installed: run `make deps`")
    domains = [arg for n in names for arg in ("-d", n)]
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.tls_root)}
    proc = subprocess.run(
        ["certbot", "certonly", "--standalone", "--http-01-port", str(pebble.http_port),
         "--http-01-address", "127.0.0.1", "--server", pebble.directory_url, *domains,
         "--agree-tos", "-m", "ops@example.test", "--non-interactive", "--key-type", "ecdsa",
         "--config-dir", str(folder), "--work-dir", str(folder.parent / "certbot-work"),
         "--logs-dir", str(folder.parent / "certbot-logs")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def lego(pebble: Pebble, folder: Path, name: str) -> None:
    if shutil.which("lego") is None:
        pytest.fail("lego is not installed: run `make deps`")
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(pebble.tls_root)}
    proc = subprocess.run(
        ["lego", "--server", pebble.directory_url, "--email", "ops@example.test",
         "--accept-tos", "--domains", name, "--http", "--http.port",
         f"127.0.0.1:{pebble.http_port}", "--path", str(folder), "--key-type", "ec256", "run"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("source", ["certbot", "lego"])
def test_import_brings_account_and_certificates_without_an_issuance(
    tmp_path: Path, make_pebble: type[Pebble], run, source: str
) -> None:
    pebble = make_pebble(tmp_path / "pebble", authz_reuse=0).start()
    src = tmp_path / source
    if source == "certbot":
        certbot(pebble, src, "www.example.test", "example.test")
        account_url = json.loads(next(src.glob("accounts/*/*/*/regr.json")).read_text())["uri"]
        live = (src / "live" / "www.example.test" / "cert.pem").read_bytes()
    else:
        lego(pebble, src, "www.example.test")
        raw = json.loads(next(src.glob("accounts/*/*/account.json")).read_text())
        account_url = raw["registration"]["uri"]
        live = (src / "certificates" / "www.example.test.crt").read_bytes()
    before = tree(src)
    path = write_config(tmp_path, pebble, {"other": ["other.example.test"]})
    result = run("-c", str(path), "--json", "import", source, str(src))
    assert result.code == 0, result.err
    done = json.loads(result.out)
    valid("import", done)
    assert done["account"] == account_url
    (name,) = done["certificates"]
    assert f"  {name}:\n    names: [www.example.test" in done["config_snippet"]
    assert tree(src) == before  # the source is only read
    current = tmp_path / "state" / "certs" / name / "current" / "cert.pem"
    assert (
        current.read_bytes().split(b"-----END CERTIFICATE-----")[0]
        == live.split(b"-----END CERTIFICATE-----")[0]
    )

    # the snippet goes into the config; the next renewal uses the imported account
    text = path.read_text() + done["config_snippet"].removeprefix("certificates:\n")
    # lego records no challenge: the snippet says port 80, the test bed's pebble another
    text = text.replace("standalone: {port: 80}", f"standalone: {{port: {pebble.http_port}}}")
    path.write_text(text)
    status = json.loads(run("-c", str(path), "--json", "status", name).out)
    assert status["certificates"][0]["release"] is not None and not status["certificates"][0]["due"]
    renewed = run("-c", str(path), "-v", "renew", "--force", name)
    assert renewed.code == 0, renewed.err
    assert "registered ACME account" not in renewed.err
    record = json.loads(next((tmp_path / "state" / "accounts").glob("*/account.json")).read_text())
    assert record["registration"]["uri"] == account_url
