"""Unit: the command line as operators expect it (issue #13): --version, no
abbreviations, suggestions, JSON errors, quiet, --dry-run, rollback's exit status."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from certagent import __version__, api
from certagent.model import CertResult, Decision, Outcome, Report


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          www:
            names: [www.example.test, example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
        """)
    )
    return path


def test_version_text(capsys: pytest.CaptureFixture[str]) -> None:
    from certagent import cli

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"certagent {__version__}"


def test_no_abbreviations(run, cfg: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("-c", str(cfg), "renew", "--forc")
    assert result.code == 64 and "--forc" in result.err


def test_a_mistyped_command_gets_a_suggestion(run) -> None:  # type: ignore[no-untyped-def]
    result = run("renw")
    assert result.code == 64 and "did you mean 'renew'" in result.err


def test_certificate_names_get_suggestions(run, cfg: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("-c", str(cfg), "plan", "wwww")
    assert result.code == 64 and "did you mean 'www'" in result.err
    result = run("-c", str(cfg), "plan", "example.test")
    assert result.code == 64 and "is a name in certificate 'www'" in result.err


def test_json_errors_are_json(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("ca: {directory: 5}\n")
    result = run("-c", str(bad), "--json", "plan")
    assert result.code == 78
    error = json.loads(result.out)
    assert error["exit_status"] == 78 and error["error_code"] == "config"
    assert {p["path"] for p in error["problems"]} >= {"ca.directory"}
    usage = run("--json", "renew", "--forc")
    assert usage.code == 64 and json.loads(usage.out)["error_code"] == "usage"


def test_dry_run_touches_nothing(run, cfg: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("-c", str(cfg), "renew", "--dry-run")
    assert result.code == 0, result.err
    assert "www: due: no certificate issued yet" in result.out
    assert "no staging CA" in result.err
    assert not (tmp_path / "state").exists()


def test_quiet_plan_still_plans(run, cfg: Path) -> None:  # type: ignore[no-untyped-def]
    assert "www: due" in run("-c", str(cfg), "-q", "plan").out


def test_a_successful_rollback_exits_0_everywhere() -> None:
    now = dt.datetime.now(dt.UTC)
    result = CertResult("www", Outcome.ROLLED_BACK, Decision(True, "asked"), release="r1")
    assert api.exit_status(Report("rollback", now, now, (result,))) == 0
    broken = CertResult("www", Outcome.BROKEN, Decision(True, "asked"))
    assert api.exit_status(Report("rollback", now, now, (broken,))) == 3
    assert api.exit_status(Report("renew", now, now, (result,))) == 2


def test_every_command_has_an_entry() -> None:
    """The grammar and the table agree: a command in the parser without an entry (or an
    entry for no command) is caught here, not by a user."""
    import argparse

    from certagent.cliparser import build_parser
    from certagent.commands import BY_NAME

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(BY_NAME)


def test_check_follows_the_plugin_conventions_for_usage_and_version(run) -> None:  # type: ignore[no-untyped-def]
    bad = run("check", "--bogus")
    assert bad.code == 3 and bad.out.startswith("CERTAGENT UNKNOWN - ")  # not 64
    bad = run("-c", "/nonexistent.yaml", "check", "-w", "soon")
    assert bad.code == 3 and "not a number of days" in bad.out
    with pytest.raises(SystemExit) as version:
        run("check", "-V")
    assert version.value.code == 0
