"""Unit: `certagent health` fails only on evidence (issue #15). A refused connection
is evidence; a server too slow to answer within the timeout is not (both nodes of a
loaded pair would fail at once and the VIP would go nowhere)."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent import config
from certagent.health import health


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP (the kernel's backlog) and never speaks TLS."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def cfg(tmp_path: Path, port: int) -> config.Config:
    return config.parse(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
            deploy: {{endpoints: ["127.0.0.1:{port}"]}}
        """),
        tmp_path / "c.yaml",
    )


def test_a_slow_server_is_not_evidence(tmp_path: Path, silent_port: int) -> None:
    result = health(cfg(tmp_path, silent_port), timeout=0.2)
    assert result.ok, result.lines
    assert "not evidence" in result.lines[0]


def test_a_refused_connection_is_evidence(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        result = health(cfg(tmp_path, port), timeout=0.5)
    assert not result.ok and "refused" in result.lines[0].lower()


def test_health_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = "import sys, certagent.cli, certagent.health; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    for heavy in ("acme", "josepy", "requests", "jinja2", "certagent.api", "certagent.store"):
        assert f"'{heavy}'" not in out, heavy
