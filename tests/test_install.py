"""Acceptance: `make install` (scripts/install) on this machine, into a root of the
test's own (issue #13): a venv with the built wheel, /usr/local/bin/certagent, the
units (verified by systemd-analyze), the cron file and /etc/certagent, and a second
run that upgrades without overwriting what the operator changed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, offline_pip_env

pytestmark = pytest.mark.integration


def install(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**offline_pip_env(), "ROOT": str(root)}
    return subprocess.run(["sh", str(ROOT / "scripts" / "install")], capture_output=True,
                          text=True, env=env, timeout=600, check=False)  # fmt: skip


def test_install_places_everything_and_keeps_changes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = install(root)
    assert first.returncode == 0, first.stderr + first.stdout
    venv_certagent = root / "opt" / "certagent" / "bin" / "certagent"
    version = subprocess.run([str(venv_certagent), "--version"], capture_output=True,
                             text=True, check=True, cwd=tmp_path)  # fmt: skip
    assert version.stdout.startswith("certagent ")
    link = root / "usr" / "local" / "bin" / "certagent"
    assert os.readlink(link) == "/opt/certagent/bin/certagent"  # the machine's path
    config = root / "etc" / "certagent" / "certagent.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert (root / "etc" / "certagent" / "templates").is_dir()
    cron = (root / "etc" / "cron.d" / "certagent").read_text()
    assert "test -d /run/systemd/system ||" in cron  # the timer's job when systemd runs
    service = (root / "etc" / "systemd" / "system" / "certagent.service").read_text()
    assert "ExecStart=/usr/local/bin/certagent " in service and "PrivateTmp=yes" in service
    man = (root / "usr" / "local" / "share" / "man" / "man1" / "certagent.1").read_text()
    assert man.startswith(".TH CERTAGENT 1")

    config.write_text(config.read_text() + "# mine\n")
    second = install(root)
    assert second.returncode == 0, second.stderr
    assert config.read_text().endswith("# mine\n")
    assert f"kept {config}" in second.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_shipped_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify against a root where /usr/local/bin/certagent exists."""
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in ("certagent.service", "certagent.timer"):
        shutil.copy(ROOT / "contrib" / "systemd" / unit, units / unit)
    binary = root / "usr" / "local" / "bin" / "certagent"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (root / "lib").symlink_to("/lib")  # the system's own units (sysinit.target, ...)
    (root / "usr" / "lib").symlink_to("/usr/lib")
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           "/etc/systemd/system/certagent.service",
                           "/etc/systemd/system/certagent.timer"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    ours = [line for line in proc.stderr.splitlines() if "certagent" in line]
    assert proc.returncode == 0 and not ours, proc.stderr[-3000:]


def test_the_unit_lets_the_keepalived_peer_command_read_root_ssh() -> None:
    """Issue #27: `ProtectHome=yes` hid /root, so `ssh root@peer` under the unit had no
    key or known_hosts; read-only keeps it readable and still unwritable."""
    unit = (Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "certagent.service")
    settings = dict(
        line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line
        and not line.startswith("#")
    )
    assert settings["ProtectHome"] == "read-only"
