"""Acceptance: the ACME account and issuances against a real pebble (issue #14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.pebble import Pebble

from .conftest import write_config
from .test_schemas import valid

pytestmark = pytest.mark.integration


def account_file(tmp_path: Path) -> Path:
    return next((tmp_path / "state" / "accounts").glob("*/account.json"))


@pytest.mark.parametrize("damage", ["deleted", "empty url", "foreign url", "garbage"])
def test_a_lost_or_damaged_account_record_is_recovered_from_the_ca(
    tmp_path: Path, pebble: Pebble, run, damage: str
) -> None:
    path = write_config(tmp_path, pebble)
    assert run("-c", str(path), "renew").code == 0
    record = account_file(tmp_path)
    original = json.loads(record.read_text())
    url = original["registration"]["uri"]
    if damage == "deleted":
        record.unlink()
    elif damage == "garbage":
        record.write_text("{not json")
    else:
        broken = json.loads(record.read_text())
        broken["registration"]["uri"] = "" if damage == "empty url" else "https://evil.test/acct/1"
        record.write_text(json.dumps(broken))
    result = run("-c", str(path), "-v", "renew", "--force")
    assert result.code == 0, result.err
    assert "registered ACME account" not in result.err  # the same account, not a new one
    assert "recovered the ACME account" in result.err
    assert json.loads(account_file(tmp_path).read_text())["registration"]["uri"] == url


def test_a_missing_template_or_webroot_is_found_before_any_order(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    """Issue #14: a deploy that cannot work must not spend an issuance."""
    path = write_config(tmp_path, pebble)
    text = path.read_text()
    text += (
        "    deploy:\n"
        f"      templates: [{{template: nginx/nosuch.conf.j2, dest: {tmp_path}/nginx/x.conf}}]\n"
    )
    path.write_text(text)
    validate = run("-c", str(path), "config", "validate")
    assert validate.code == 78
    assert "nginx/nosuch.conf.j2 not found" in validate.err
    assert f"the directory of {tmp_path}/nginx/x.conf does not exist" in validate.err
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 1
    (cert,) = json.loads(result.out)["certificates"]
    assert cert["error_code"] == "precheck" and "not ordering" in cert["error"]
    assert not (tmp_path / "state" / "certs" / "www" / "releases").exists()
    assert not list((tmp_path / "state" / "accounts").glob("*/account.json"))  # no CA call

    webroot = (
        write_config(tmp_path, pebble)
        .read_text()
        .replace(
            f"standalone: {{address: 127.0.0.1, port: {pebble.http_port}}}",
            f"webroot: {tmp_path}/typo",
        )
    )
    path.write_text(webroot)
    result = run("-c", str(path), "renew", "--force")  # past the failure's backoff
    assert result.code == 1 and f"the webroot {tmp_path}/typo does not exist" in result.err
    assert not (tmp_path / "typo").exists()


def test_terms_of_service_must_be_agreed_before_registering(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = write_config(tmp_path, pebble)
    agreed = path.read_text()
    path.write_text(agreed.replace("  agree_tos: true\n", ""))
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 1
    (cert,) = json.loads(result.out)["certificates"]
    assert cert["error_code"] == "terms-of-service"
    assert "data:text/plain" in cert["error"] and "ca.agree_tos: true" in cert["error"]
    assert not list((tmp_path / "state" / "accounts").glob("*/account.json"))
    path.write_text(agreed)
    assert run("-c", str(path), "renew", "--force").code == 0
    # an account that exists is unaffected by the setting
    path.write_text(agreed.replace("  agree_tos: true\n", ""))
    assert run("-c", str(path), "renew", "--force").code == 0


def _ca_block(path: Path, extra: str) -> None:
    path.write_text(path.read_text().replace("  agree_tos: true\n", f"  agree_tos: true\n{extra}"))


def test_preferred_chain_is_chosen_among_the_alternates(
    tmp_path: Path, make_pebble: type[Pebble], run
) -> None:
    from cryptography import x509

    server = make_pebble(tmp_path / "pebble", alternate_roots=1).start()
    alternate = x509.load_pem_x509_certificate(server.issuing_roots(1))
    cn = alternate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    path = write_config(tmp_path, server)
    _ca_block(path, f"  preferred_chain: '{cn}'\n")
    result = run("-c", str(path), "renew")
    assert result.code == 0, result.err
    chain = next((tmp_path / "state" / "certs" / "www" / "releases").glob("*/fullchain.pem"))
    top = x509.load_pem_x509_certificates(chain.read_bytes())[-1]
    assert top.issuer == alternate.subject  # not the default chain's root


def test_an_unknown_profile_is_a_clear_error(tmp_path: Path, pebble: Pebble, run) -> None:
    path = write_config(tmp_path, pebble)
    key = "    key_type: ec-p256\n"
    path.write_text(path.read_text().replace(key, f"{key}    profile: shortlived\n"))
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 1
    (cert,) = json.loads(result.out)["certificates"]
    assert cert["error_code"] == "profile" and "offers no profile 'shortlived'" in cert["error"]


def test_reuse_key_keeps_the_key_and_the_default_does_not(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = write_config(tmp_path, pebble)
    base = path.read_text()

    def key_after_renew() -> bytes:
        assert run("-c", str(path), "renew", "--force").code == 0
        return (tmp_path / "state" / "certs" / "www" / "current" / "privkey.pem").read_bytes()

    first = key_after_renew()
    assert key_after_renew() != first
    path.write_text(
        base.replace("    key_type: ec-p256\n", "    key_type: ec-p256\n    reuse_key: true\n")
    )
    kept = key_after_renew()
    assert key_after_renew() == kept


def test_revoke_then_the_next_run_replaces_it_with_a_new_key(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = write_config(tmp_path, pebble)
    text = path.read_text()
    key = "    key_type: ec-p256\n"
    path.write_text(text.replace(key, f"{key}    reuse_key: true\n"))
    assert run("-c", str(path), "renew").code == 0
    live = tmp_path / "state" / "certs" / "www" / "current"
    old_key = (live / "privkey.pem").read_bytes()
    assert run("-c", str(path), "revoke").code == 64  # a name is required
    result = run("-c", str(path), "--json", "revoke", "www", "--reason", "keyCompromise")
    assert result.code == 0, result.err
    assert json.loads(result.out)["certificates"][0]["outcome"] == "revoked"
    again = run("-c", str(path), "revoke", "www")
    assert again.code == 64 and "already revoked" in again.err
    plan = json.loads(run("-c", str(path), "--json", "plan").out)["certificates"][0]
    assert plan["decision"]["due"] and "revoked (keyCompromise)" in plan["decision"]["reason"]
    assert run("-c", str(path), "renew").code == 0
    assert (live / "privkey.pem").read_bytes() != old_key  # never the compromised key


def test_account_show_rollover_deactivate(tmp_path: Path, pebble: Pebble, run) -> None:
    path = write_config(tmp_path, pebble)
    assert run("-c", str(path), "renew").code == 0
    shown = json.loads(run("-c", str(path), "--json", "account", "show").out)
    assert shown["status"] == "valid" and shown["url"].startswith("https://")
    valid("account", shown)
    rolled = run("-c", str(path), "--json", "account", "rollover")
    assert rolled.code == 0, rolled.err
    after = json.loads(rolled.out)
    valid("account", after)
    assert after["url"] == shown["url"]  # the same account, a new key
    assert after["key_thumbprint"] != shown["key_thumbprint"]
    assert run("-c", str(path), "renew", "--force").code == 0  # ordering with the new key
    assert run("-c", str(path), "account", "deactivate").code == 64  # needs --yes
    done = run("-c", str(path), "--json", "account", "deactivate", "--yes")
    assert done.code == 0, done.err
    assert json.loads(done.out)["deactivated"] == shown["url"]
    valid("account", json.loads(done.out))


def test_a_run_with_nothing_due_imports_no_acme_and_sends_nothing(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    """Issues #16 and #28: what the CA offers is learnt when its directory is read (here:
    pebble offers no renewal information, believed for a day, once per CA), so already
    the first no-op run after the issuance neither imports the ACME stack nor calls the
    CA, nor writes a state file per certificate."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    path = write_config(tmp_path, pebble)
    assert run("-c", str(path), "renew").code == 0  # the issuance: the directory is read
    state = tmp_path / "state" / "certs" / "www" / "state.json"
    written = state.stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "certagent", "-c", str(path), "renew"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
              if line.startswith("import time:")}  # fmt: skip
    assert not loaded & {"acme", "josepy", "requests"}, loaded & {"acme", "josepy", "requests"}
    assert state.stat().st_mtime_ns == written  # nothing learnt per certificate
