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
    "dns": {"dns01/"},
    "jinja2": {"render.py"},
    "subprocess": {"system.py"},
    "sqlite3": {"index.py"},
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports anywhere: at the
    top, inside a function (deferred) or for the type checker only."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_the_import_graph_has_no_cycles() -> None:
    """Layers hold when nothing imports, even deferred or for types, anything that
    imports it back: each module sits on a floor above everything it uses."""
    graph = import_graph()
    floor: dict[str, int] = {}
    visiting: list[str] = []

    def place(name: str) -> int:
        if name in floor:
            return floor[name]
        assert name not in visiting, "import cycle: " + " -> ".join(
            [*visiting[visiting.index(name):], name]
        )
        visiting.append(name)
        floor[name] = 1 + max((place(d) for d in graph[name]), default=-1)
        visiting.pop()
        return floor[name]

    for name in sorted(graph):
        place(name)
    assert max(floor.values()) < 25, "the import graph has grown too deep"


MODULE_LINES = 520  # a module past ~500 lines is split by what it does
CLASS_LINES = 250  # a class past this says why in its docstring ("Its size: ...")


def test_no_module_or_class_grows_past_its_room() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        assert text.count("\n") <= MODULE_LINES, f"{rel}: split it by what it does"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                why = "Its size:" in (ast.get_docstring(node) or "")
                assert size <= CLASS_LINES or why, f"{rel}: class {node.name} has {size} lines"
