"""Acceptance: the Debian package (issue #27, item 2) through its whole life with dpkg
on this machine: install, an upgrade from the previous build (code and units replaced,
the operator's configuration kept), remove (code gone, configuration kept) and purge
(configuration gone; the state directory is never touched)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT, WHEELHOUSE, offline_pip_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg-deb") is None,
                       reason="dpkg as root"),
]

CONFIG = Path("/etc/certagent/certagent.yaml")


def build(version: str) -> Path:
    env = {**offline_pip_env(), "VERSION": version, "PYTHON": sys.executable,
           "WHEELHOUSE": str(WHEELHOUSE)}  # fmt: skip
    done = subprocess.run(["sh", str(ROOT / "scripts" / "build-deb")], capture_output=True,
                          text=True, env=env, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return Path(done.stdout.strip().splitlines()[-1].removeprefix("built "))


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["dpkg", "--force-confold", *args], capture_output=True, text=True,
                          env=env, timeout=600, check=False)  # fmt: skip


@pytest.fixture
def machine() -> Iterator[None]:
    """This machine, without certagent from elsewhere; purged again afterwards."""
    if subprocess.run(["dpkg", "-s", "certagent"], capture_output=True).returncode == 0:
        pytest.skip("a certagent package is installed on this machine already")
    if Path("/opt/certagent").exists() or CONFIG.exists():
        pytest.skip("certagent is installed here by other means (make install)")
    try:
        yield
    finally:
        dpkg("-P", "certagent")


def test_install_upgrade_remove_purge(machine: None) -> None:
    first, second = build("0.1.0~test1"), build("0.1.0~test2")
    installed = dpkg("-i", str(first))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    version = subprocess.run(["/usr/bin/certagent", "--version"], capture_output=True,
                             text=True, check=True, cwd="/")  # fmt: skip
    assert version.stdout.startswith("certagent ")
    assert stat.S_IMODE(CONFIG.stat().st_mode) == 0o600
    service = Path("/lib/systemd/system/certagent.service").read_text()
    assert "ExecStart=/usr/bin/certagent " in service
    assert "/usr/bin/certagent" in Path("/etc/cron.d/certagent").read_text()
    assert Path("/usr/share/man/man1/certagent.1.gz").is_file()

    CONFIG.write_text(CONFIG.read_text() + "# mine\n")
    upgraded = dpkg("-i", str(second))
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert CONFIG.read_text().endswith("# mine\n")  # the operator's configuration is kept
    status = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "certagent"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert status.stdout == "0.1.0~test2"
    assert subprocess.run(["/usr/bin/certagent", "--help"], capture_output=True,
                          check=False).returncode == 0  # fmt: skip

    removed = dpkg("-r", "certagent")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not Path("/opt/certagent").exists() and not Path("/usr/bin/certagent").exists()
    assert CONFIG.exists()  # a conffile stays until purge

    purged = dpkg("-P", "certagent")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not CONFIG.exists() and not Path("/etc/cron.d/certagent").exists()
    assert not Path("/etc/certagent").exists()
