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


@pytest.fixture
def other_cert(tmp_path: Path) -> Iterator[int]:
    """A TLS server that answers every name with a certificate for another name (what
    a web server's default site does for a certificate not yet deployed)."""
    import ssl
    import threading

    from testbed import pki

    cert, key = pki.self_signed(["other.example.test"])
    (tmp_path / "o.pem").write_bytes(cert)
    (tmp_path / "o.key").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "o.pem", tmp_path / "o.key")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    sock.close()
    thread.join(5)


def test_another_certificate_counts_only_once_this_one_was_deployed_here(
    tmp_path: Path, other_cert: int
) -> None:
    """A certificate just added to the config is served by neither node: failing both
    would refuse its first deploy, because the MASTER's gate wants the BACKUP GOOD."""
    c = cfg(tmp_path, other_cert)
    fresh = health(c, timeout=2)
    assert fresh.ok, fresh.lines
    assert "never deployed on this node yet" in fresh.lines[0]
    link = tmp_path / "state" / "certs" / "www" / "current"
    link.parent.mkdir(parents=True)
    link.symlink_to("releases/20261201T000000Z-1")  # dangling still means it went live
    deployed = health(c, timeout=2)
    assert not deployed.ok and "certificate not accepted" in deployed.lines[0]
