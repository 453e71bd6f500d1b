"""Unit: every --json output validates against the JSON Schema the package ships
(certagent/schemas/*.json, issue #13), taken from real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from certagent import api, config

from .fakes import LocalIssuer, minimal_yaml

SCHEMAS = Path(__file__).resolve().parent.parent / "certagent" / "schemas"


def valid(name: str, document: Any) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(document, schema)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    monitor = 'monitor: {timeout: 1, endpoints: [{address: "127.0.0.1:1", name: db}]}\n'
    path.write_text(minimal_yaml(tmp_path, top=monitor))
    return path


def test_reports_validate(cfg: Path, run) -> None:  # type: ignore[no-untyped-def]
    loaded = config.load(cfg)
    report = api.renew(loaded, issuer=LocalIssuer())
    valid("report", {**report.to_json(), "exit_status": int(api.exit_status(report))})
    for args in (("plan",), ("renew",)):  # renew: nothing due, and LocalIssuer not needed
        result = run("-c", str(cfg), "--json", *args)
        assert result.code == 0, result.err
        valid("report", json.loads(result.out))
    valid("status", json.loads(run("-c", str(cfg), "--json", "status").out))
    checked = run("-c", str(cfg), "--json", "check", "db")
    valid("check", json.loads(checked.out))


def test_errors_validate(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("ca: {directory: 5}\n")
    valid("error", json.loads(run("-c", str(bad), "--json", "plan").out))
    valid("error", json.loads(run("--json", "renew", "--forc").out))


def test_every_command_answers_json_that_validates(cfg: Path, tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    """Issue #27: metrics, health, config validate, history and backup honour --json,
    each with a `schema` field and a shipped schema; `check` with a configuration error
    answers the error document with UNKNOWN (3), not plugin text."""
    loaded = config.load(cfg)
    api.renew(loaded, issuer=LocalIssuer())  # a release, a state, a history record
    for name, args in (("metrics", ("metrics",)), ("health", ("health",)),
                       ("validate", ("config", "validate")), ("history", ("history",)),
                       ("backup", ("backup", str(tmp_path / "b.tar.gz")))):  # fmt: skip
        result = run("-c", str(cfg), "--json", *args)
        assert result.code in (0, 1), (args, result.err)
        valid(name, json.loads(result.out))
    bad = tmp_path / "bad.yaml"
    bad.write_text("ca: {directory: 5}\n")
    checked = run("-c", str(bad), "--json", "check")
    assert checked.code == 3
    error = json.loads(checked.out)
    valid("error", error)
    assert error["exit_status"] == 3 and error["problems"]
