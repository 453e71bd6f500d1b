"""Architecture lines the project holds: who may import what, and what start-up costs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "certagent"

OWNERS = {  # a folder name (ending in "/") owns it for each of its modules
    "acme": {"acmeclient/"},
    "josepy": {"acmeclient/"},
    "requests": {"acmeclient/"},
    "yaml": {"config.py"},
    "dns": {"dns01.py"},
    "jinja2": {"render.py"},
    "subprocess": {"system.py"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_each_foreign_library_has_one_owner() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for module in imported_modules(path) & OWNERS.keys():
            owned = rel in OWNERS[module] or any(
                o.endswith("/") and rel.startswith(o) for o in OWNERS[module]
            )
            assert owned, f"{rel} imports {module}; only {OWNERS[module]} may"


def test_help_and_status_do_not_import_acme(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\nca: {{directory: https://ca.invalid/dir}}\n"
        "certificates:\n  www:\n    names: [www.example.test]\n"
        "    challenge: {type: http-01, webroot: /srv}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["--help"], ["-c", str(cfg), "status"], ["-c", str(cfg), "plan"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "certagent", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        loaded = {
            line.split("|")[-1].strip().split(".")[0]
            for line in proc.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert not loaded & {"acme", "josepy", "requests", "jinja2", "dns"}, (args, loaded)


def test_every_package_is_in_the_wheel() -> None:
    """A new subpackage not listed in pyproject.toml works in the checkout and is
    missing from the installed wheel (found by tests/test_installed_wheel.py, late)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])  # fmt: skip
    for init in PACKAGE.rglob("__init__.py"):
        if "__pycache__" in init.parts:
            continue
        name = ".".join(init.parent.relative_to(ROOT).parts)
        assert name in listed, f"{name} is not in pyproject.toml's packages"
