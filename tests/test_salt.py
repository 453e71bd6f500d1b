"""Acceptance: the shipped Salt modules, loaded through the salt.loader entry point by a
real Salt (pinned, in its own venv), renewing against a real pebble."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testbed.pebble import Pebble

from .conftest import write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
SALT_VENV = ROOT / "build" / "salt-venv"


class Minion:
    """A masterless minion configuration in a temporary directory."""

    def __init__(self, tmp: Path, certagent_config: Path) -> None:
        if not (SALT_VENV / "bin" / "salt-call").is_file():
            pytest.fail(f"{SALT_VENV} is missing: run `make salt-venv` (`make test` does)")
        self.tmp = tmp
        self.conf = tmp / "salt-conf"
        self.conf.mkdir()
        srv = tmp / "srv"
        srv.mkdir()
        minion = {
            "id": "certagent-test",
            "file_client": "local",
            "root_dir": str(tmp / "salt-root"),
            "cachedir": str(tmp / "salt-cache"),
            "pki_dir": str(tmp / "salt-pki"),
            "sock_dir": str(tmp / "salt-sock"),
            "log_file": str(tmp / "salt.log"),
            "log_level_logfile": "info",
            "file_roots": {"base": [str(srv)]},
            "pillar_roots": {"base": [str(tmp / "pillar")]},
            "enable_fqdns_grains": False,
        }
        (self.conf / "minion").write_text(json.dumps(minion))
        self.sls = srv / "certagent.sls"
        self.write_sls(certagent_config)

    def write_sls(self, config: Path, name: str = "all") -> None:
        state = {
            "tls-certificates": {"certagent.renewed": [{"name": name}, {"config": str(config)}]}
        }
        self.sls.write_text(json.dumps(state))

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{SALT_VENV / 'bin'}:{os.environ['PATH']}"}

    def write_watching_sls(self, config: Path) -> None:
        state = {
            "trigger": {"test.succeed_with_changes": []},
            "tls-certificates": {
                "certagent.renewed": [
                    {"name": "www"},
                    {"config": str(config)},
                    {"watch": [{"test": "trigger"}]},
                ]
            },
        }
        self.sls.write_text(json.dumps(state))

    def apply(self, *extra: str) -> dict[str, Any]:
        argv = [str(SALT_VENV / "bin" / "salt-call"), "--local", "--config-dir", str(self.conf)]
        argv += ["--out", "json", "--log-level", "quiet", "state.apply", "certagent", *extra]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=120)
        assert proc.stdout, proc.stderr[-3000:]
        states = json.loads(proc.stdout)["local"]
        ours = [v for k, v in states.items() if k.startswith("certagent_")]
        assert len(ours) == 1, states
        return ours[0]

    def call(self, *calls: tuple[str, list[Any], dict[str, Any]]) -> list[Any]:
        argv = [str(SALT_VENV / "bin" / "python"), str(ROOT / "tests" / "salt_caller.py")]
        argv += [str(self.conf / "minion"), json.dumps(calls)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_salt_call_state_apply_predicts_renews_then_is_idempotent(
    tmp_path: Path, pebble: Pebble
) -> None:
    config = write_config(tmp_path, pebble)
    minion = Minion(tmp_path, config)

    predicted = minion.apply("test=True")
    assert predicted["result"] is None  # Salt's "would change"
    assert list(predicted["changes"]) == ["www"]
    assert "would renew www" in predicted["comment"]
    assert not (tmp_path / "state" / "certs").exists()  # test=True changed nothing

    applied = minion.apply()
    assert applied["result"] is True, applied["comment"]
    change = applied["changes"]["www"]
    assert change["old"] is None and change["new"]
    live = os.readlink(tmp_path / "state" / "certs" / "www" / "current")
    assert live.endswith(change["new"])

    again = minion.apply()
    assert again["result"] is True and again["changes"] == {}
    assert "nothing to do" in again["comment"]

    # A watched state with changes (a template, the pillar, the web server's config)
    # re-deploys the current release; it orders nothing that is not due.
    config.write_text(
        config.read_text()
        + "    deploy: {hook: ['true'], endpoints: none, endpoints_reason: test}\n"
    )
    minion.write_watching_sls(config)
    predicted = minion.apply("test=True")  # Salt's convention: None, the redeploy said
    assert predicted["result"] is None, predicted
    assert predicted["changes"]["www"] == {"redeploy": change["new"],
                                           "reason": "a watched state changed"}  # fmt: skip
    watched = minion.apply()
    assert watched["result"] is True, watched["comment"]
    assert watched["changes"]["www"]["reason"] == "a watched state changed"
    assert "deployed release" in watched["comment"]
    # The per-certificate state, named by its ID: nothing due, nothing changed.
    minion.sls.write_text(json.dumps({"www": {"certagent.certificate": [{"config": str(config)}]}}))
    single = minion.apply()
    assert single["result"] is True and single["changes"] == {}, single
    assert "www: nothing to do" in single["comment"]
    store = tmp_path / "state" / "certs" / "www"
    redeployed = json.loads((store / "current" / "meta.json").read_text())
    first = json.loads((store / "releases" / change["new"] / "meta.json").read_text())
    assert redeployed["fingerprint_sha256"] == first["fingerprint_sha256"]  # no new order


def test_test_true_before_the_config_exists_is_none(tmp_path: Path) -> None:
    """An earlier state in the same run would write the configuration (issue #13)."""
    minion = Minion(tmp_path, tmp_path / "not-yet.yaml")
    predicted = minion.apply("test=True")
    assert predicted["result"] is None, predicted
    assert "does not exist yet" in predicted["comment"]


def test_salt_call_exits_non_zero_when_certagent_fails(tmp_path: Path) -> None:
    minion = Minion(tmp_path, tmp_path / "missing.yaml")
    argv = [str(SALT_VENV / "bin" / "salt-call"), "--local", "--config-dir", str(minion.conf),
            "--out", "json", "certagent.renew", f"config={tmp_path / 'missing.yaml'}"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=minion.env(), timeout=120)
    # Salt turns any retcode into salt-call's exit 1; the exact status is in the data
    assert proc.returncode != 0, (proc.stdout, proc.stderr[-2000:])
    assert json.loads(proc.stdout)["local"]["exit_status"] == 78


def test_salt_call_failure_is_result_false_with_the_reason(tmp_path: Path, pebble: Pebble) -> None:
    config = write_config(tmp_path, pebble, {"www": ["www.blocked.test"]})
    ret = Minion(tmp_path, config).apply()
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "www: failed_before_swap" in ret["comment"] and "blocked" in ret["comment"]


def test_execution_and_state_functions_in_process_through_caller(
    tmp_path: Path, pebble: Pebble
) -> None:
    config = write_config(tmp_path, pebble)
    minion = Minion(tmp_path, config)
    plan, renewed, status, second, watched, bad = minion.call(
        ("certagent.plan", [], {"config": str(config)}),
        ("certagent.renew", [], {"config": str(config)}),
        ("certagent.status", ["www"], {"config": str(config)}),
        ("state.single", ["certagent.renewed", "www"], {"config": str(config)}),
        ("certagent.renew", ["www"], {"config": str(config), "force": True}),
        ("certagent.status", [], {"config": str(tmp_path / "missing.yaml")}),
    )
    assert plan["certificates"][0]["decision"]["due"] is True
    assert renewed["exit_status"] == 0
    assert renewed["certificates"][0]["outcome"] == "renewed"
    assert status["certificates"][0]["release"] == renewed["certificates"][0]["release"]
    state = next(iter(second.values()))
    assert state["result"] is True and state["changes"] == {}
    assert watched["certificates"][0]["outcome"] == "renewed"
    assert bad["exit_status"] == 78 and "missing.yaml" in bad["error"]
