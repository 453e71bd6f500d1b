"""Acceptance: the ACME account and issuances against a real pebble (issue #14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.pebble import Pebble

from .conftest import write_config

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
