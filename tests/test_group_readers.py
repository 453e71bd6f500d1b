"""Acceptance: non-root readers (issue #13). With `state_group`, a member of that group
(here `nobody`, whose group is `nogroup`) reads the live key and chain, and runs
`status`, `metrics` and `check`, as a monitoring user or a web server reading keys as
itself would; the account key stays root's alone. Without access, `check` is UNKNOWN
with the reason on stdout, never an internal error."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from certagent import api, config
from certagent.store import Store

from .conftest import ROOT
from .fakes import LocalIssuer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs commands as nobody")
SYSTEM_PYTHON = Path("/usr/bin/python3")


def open_to_nobody(folder: Path) -> None:
    for p in [folder, *folder.parents]:
        if p == Path("/"):
            break
        p.chmod(p.stat().st_mode | 0o001)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """certagent as nobody, with the system's Python (the venv's may live under /root)
    and this checkout and the venv's libraries on its path."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3 to run certagent as another user")
    path = f"{ROOT}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"
    cmd = ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={path}",
           str(SYSTEM_PYTHON), "-m", "certagent", *argv]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def make(tmp_path: Path, group: str | None) -> config.Config:
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        {f"state_group: {group}" if group else ""}
        monitor: {{timeout: 1, endpoints: [{{address: "127.0.0.1:1", sni: www.example.test}}]}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
            deploy: {{endpoints: none, endpoints_reason: a test without a server}}
        """)
    )
    path.chmod(0o644)
    open_to_nobody(tmp_path)
    return config.load(path)


def test_a_group_member_reads_keys_and_runs_status_metrics_check(tmp_path: Path) -> None:
    cfg = make(tmp_path, "nogroup")
    api.renew(cfg, issuer=LocalIssuer())
    api.renew(cfg, force=True, issuer=LocalIssuer())  # kept across renews
    store = Store(cfg.state_dir)
    accounts = store.account_dir("https://ca.invalid/dir")
    current = store.current("www")
    assert current is not None
    key = current.path / "privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o640 and key.stat().st_gid == 65534
    assert stat.S_IMODE(cfg.state_dir.stat().st_mode) == 0o750
    assert stat.S_IMODE(accounts.stat().st_mode) == 0o700

    read = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(key)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert read.returncode == 0 and "PRIVATE KEY" in read.stdout
    peek = subprocess.run(["runuser", "-u", "nobody", "--", "ls", str(accounts)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert peek.returncode != 0  # the account key is root's alone

    status = as_nobody("-c", str(cfg.source), "--json", "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["certificates"][0]["release"] == current.release_id
    metrics = as_nobody("-c", str(cfg.source), "metrics")
    assert metrics.returncode == 0 and "certagent_certificate_not_after" in metrics.stdout
    check = as_nobody("-c", str(cfg.source), "check")
    assert check.returncode == 2 and "connection refused" in check.stdout, check.stdout
    assert "internal error" not in check.stdout + check.stderr


def test_without_access_check_is_unknown_or_probes_with_the_reason_on_stdout(
    tmp_path: Path,
) -> None:
    cfg = make(tmp_path, None)
    api.renew(cfg, issuer=LocalIssuer())
    check = as_nobody("-c", str(cfg.source), "check")
    assert check.returncode in (2, 3), check.stdout + check.stderr
    assert check.stdout.startswith("CERTAGENT "), check.stdout
    assert "internal error" not in check.stdout + check.stderr
    status = as_nobody("-c", str(cfg.source), "status")
    assert "internal error" not in status.stdout + status.stderr
    # not a wrong "due now" with exit 0: why it cannot tell, and a failure (issue #27)
    assert status.returncode == 1 and "cannot read the state directory" in status.stderr
    assert "state_group" in status.stderr
    plan = as_nobody("-c", str(cfg.source), "plan")
    assert plan.returncode == 1 and "cannot read the state directory" in plan.stderr
    assert sys.executable  # the test ran as root: its own Python is irrelevant here
