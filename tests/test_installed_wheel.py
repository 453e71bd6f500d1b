"""Acceptance: certagent as users get it (issue #13): the wheel built from this
checkout, installed into a fresh venv outside the checkout, renews from a real pebble
and deploys to a real nginx with the templates the wheel carries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from testbed.nginx import Nginx
from testbed.pebble import Pebble

from .conftest import ROOT, offline_pip_env
from .test_deploy_nginx import Setup, served
from .test_deploy_nginx import nginx as nginx
from .test_deploy_nginx import pebble_root as pebble_root

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `certagent` command of a venv that holds only the built wheel and its deps."""
    where = tmp_path_factory.mktemp("wheel")
    pip_env = offline_pip_env()
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where / "dist")]
    subprocess.run([*build, str(ROOT)], check=True, cwd=where, env=pip_env)
    (wheel,) = (where / "dist").glob("certagent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("certagent/templates/nginx/nginx.conf.j2", "certagent/examples/certagent.yaml",
                   "certagent/contrib/systemd/certagent.service",
                   "certagent/schemas/report.schema.json"):  # fmt: skip
        assert needed in names, needed
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True,
                   cwd=where, env=pip_env)  # fmt: skip
    return venv / "bin" / "certagent"


def test_the_installed_wheel_renews_and_deploys_with_its_own_templates(
    installed: Path, tmp_path: Path, pebble: Pebble, pebble_root: Path, nginx: Nginx
) -> None:
    setup = Setup(tmp_path, pebble, pebble_root, nginx)
    path = setup.write(template="nginx/nginx.conf.j2")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def certagent(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(installed), "-c", str(path), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=outside,
                              timeout=120, check=False)  # fmt: skip

    code = "import certagent.render as r; print(r.__file__, r.shipped_template_dir())"
    python = str(installed.parent / "python")
    where = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env,
                           cwd=outside, check=True)  # fmt: skip
    assert str(ROOT) not in where.stdout  # really the installed copy
    result = certagent("--json", "renew")
    assert result.returncode == 0, result.stderr
    (cert,) = json.loads(result.stdout)["certificates"]
    assert [s["step"] for s in cert["steps"]][-1] == "verify"
    assert served(nginx.port, pebble_root) == setup.current_fp()
    assert certagent("status").returncode == 0
