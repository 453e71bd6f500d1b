"""Acceptance: kill -9 at every step of a real renewal, and concurrent runs (issue #12).

A real pebble issues, a real nginx serves; certagent runs as its own process and is
killed (tests/killer.py, through Python's audit hooks) at the moment each rule names:
while an order is pending, while staging, at the config test, right after the swap,
after the reload, during verify, during a rollback and during prune. Then certagent
runs again, as cron would, and the test holds the promises: the served certificate is
valid and is the current release, no release or account key or history line was
lost, and `status` and `plan` agree with what is on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certagent.store import Store
from testbed.nginx import Nginx
from testbed.pebble import Pebble

from .conftest import ROOT
from .test_deploy_nginx import Setup, served
from .test_deploy_nginx import nginx as nginx
from .test_deploy_nginx import pebble_root as pebble_root

pytestmark = pytest.mark.integration


def certagent(
    *args: str, rule: str | None = None, port: int = 0
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_PORT": str(port)}
    argv = [sys.executable, "-m", "tests.killer", rule, *args] if rule else [
        sys.executable, "-m", "certagent", *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False, cwd=ROOT)  # fmt: skip


def facts(setup: Setup) -> dict[str, object]:
    state = setup.tmp / "state"
    history = state / "history.jsonl"
    return {
        "releases": {
            p.name
            for p in (state / "certs" / "www" / "releases").iterdir()
            if not p.name.startswith(".")
        },
        "account": sorted(p.read_bytes() for p in (state / "accounts").glob("*/key.pem")),
        "history": history.read_text().count("\n") if history.exists() else 0,
    }


def holds_promises(setup: Setup, before: dict[str, object]) -> None:
    after = facts(setup)
    assert before["releases"] <= after["releases"]  # type: ignore[operator]  # none lost
    assert after["account"] == before["account"]
    assert after["history"] >= before["history"]  # type: ignore[operator]
    store = Store(setup.tmp / "state")
    current = store.current("www")
    assert current is not None and store.damage(current) is None
    assert served(setup.nginx.port, setup.root) == current.fingerprint_sha256  # verified chain
    status = json.loads(certagent("-c", str(setup.path), "--json", "status").stdout)
    plan = json.loads(certagent("-c", str(setup.path), "--json", "plan").stdout)
    (row,) = status["certificates"]
    (planned,) = plan["certificates"]
    assert row["release"] == current.release_id == planned["release"]
    assert row["due"] == planned["decision"]["due"]
    leftovers = [p.name for p in (setup.tmp / "state").rglob("*") if ".tmp" in p.name]
    assert not leftovers


@pytest.fixture
def setup(tmp_path: Path, pebble: Pebble, pebble_root: Path, nginx: Nginx) -> Setup:
    s = Setup(tmp_path, pebble, pebble_root, nginx)
    s.write(extra={"verify_timeout": 3})
    first = certagent("-c", str(s.path), "renew")
    assert first.returncode == 0, first.stderr
    return s


RULES = ["order", "stage", "config-test", "after-swap", "after-reload", "verify", "prune"]


@pytest.mark.parametrize("rule", RULES)
def test_kill_at_each_step_then_the_next_run_heals(setup: Setup, rule: str) -> None:
    if rule == "prune":  # one release over the limit, so the next renewal prunes
        text = setup.path.read_text().replace('"failure_backoff": 0', '"failure_backoff": 0, '
                                              '"keep_releases": 1')  # fmt: skip
        setup.path.write_text(text)
        assert certagent("-c", str(setup.path), "renew", "--force").returncode == 0
    before = facts(setup)
    port = setup.pebble.http_port if rule == "order" else setup.nginx.port
    killed = certagent("-c", str(setup.path), "renew", "--force", rule=rule, port=port)
    assert killed.returncode == -9, (rule, killed.returncode, killed.stderr[-2000:])
    if rule == "prune":
        before["releases"] = facts(setup)["releases"]  # pruning is allowed to remove them
    healed = certagent("-c", str(setup.path), "renew")
    assert healed.returncode == 0, healed.stderr
    assert "internal error" not in healed.stderr
    holds_promises(setup, before)
    if rule in ("after-swap", "after-reload", "verify"):
        # the swapped release was verified by the next run, not thrown away
        current = Store(setup.tmp / "state").current("www")
        assert current is not None and current.release_id not in before["releases"]  # type: ignore[operator]


def test_kill_during_a_rollback_then_the_old_certificate_is_served(setup: Setup) -> None:
    before = facts(setup)
    old = Store(setup.tmp / "state").current("www")
    assert old is not None
    # a hook that does not reload on deploy: verify fails, the rollback starts, and dies
    setup.write(hook=setup.shell_hook("exit 0"), extra={"verify_timeout": 1})
    killed = certagent("-c", str(setup.path), "renew", "--force", rule="rollback",
                       port=setup.nginx.port)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    setup.write(extra={"verify_timeout": 3})
    healed = certagent("-c", str(setup.path), "renew")
    assert healed.returncode in (0, 2), healed.stderr
    holds_promises(setup, before)


def test_concurrent_runs_one_waits_its_turn(setup: Setup) -> None:
    before = facts(setup)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "certagent", "-c", str(setup.path), "renew", "--force"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]  # fmt: skip
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert set(codes) <= {0, 75} and codes[0] == 0, codes
    holds_promises(setup, before)


def test_an_issuance_killed_before_staging_is_used_by_the_next_run(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, nginx: Nginx
) -> None:
    """The CA issued, the run died before the release was written: the next run stages
    that certificate instead of ordering another (issue #14: never waste an issuance)."""
    s = Setup(tmp_path, pebble, pebble_root, nginx)
    s.write(extra={"verify_timeout": 3})
    killed = certagent("-c", str(s.path), "renew", rule="stage")
    assert killed.returncode == -9, killed.stderr[-2000:]
    kept = list((tmp_path / "state" / "certs" / "www" / "issued").glob("*.json"))
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o077 == 0  # a key inside: 0600
    healed = certagent("-c", str(s.path), "--json", "renew")
    assert healed.returncode == 0, healed.stderr
    (cert,) = json.loads(healed.stdout)["certificates"]
    steps = [st["step"] for st in cert["steps"]]
    assert "order" not in steps, steps  # exactly one order at pebble, by the killed run
    assert "issued earlier and kept" in cert["steps"][steps.index("stage")]["detail"]
    assert not list((tmp_path / "state" / "certs" / "www" / "issued").glob("*.json"))
    assert served(nginx.port, pebble_root) == s.current_fp()
