"""Acceptance: apache as Debian runs it (issue #26, item 2): a private instance of
Debian's apache2 in the Debian layout (sites-enabled/, mods-enabled/ssl, envvars,
APACHE_CONFDIR), certagent rendering one site per certificate from the shipped
template, `apache2ctl -t` as the config test (the candidates in view) and `apache2ctl
graceful` as the reload: two certificates with one test and one reload, SNI picking
each; a typo in the operator's own apache configuration refused before ordering, in
apache's words, with nothing swapped."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent import api
from certagent.store import Store
from testbed.apache import Apache
from testbed.pebble import Pebble

pytestmark = pytest.mark.integration

NAMES = {"www": "www.example.test", "api": "api.example.test"}


@pytest.fixture
def apache(tmp_path: Path) -> Iterator[Apache]:
    server = Apache(tmp_path / "apache").start()
    yield server
    server.stop()


def served(port: int, name: str, root: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(root))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def write(tmp_path: Path, pebble: Pebble, apache: Apache, root: Path) -> Path:
    docroot = tmp_path / "htdocs"
    docroot.mkdir()
    certs = {
        name: {
            "names": [host],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": pebble.http_port}},
            "deploy": {
                "templates": [{"template": "apache/site.conf.j2",
                               "dest": str(apache.sites / f"{name}.conf")}],
                "vars": {"listen": f"127.0.0.1:{apache.port}", "document_root": str(docroot)},
                "test": apache.command("-t"),
                "hook": apache.command("graceful"),
                "endpoints": [f"127.0.0.1:{apache.port}"],
                "trust_roots": [str(root)],
                "verify_timeout": 15,
            },
        }
        for name, host in NAMES.items()
    }  # fmt: skip
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {"directory": pebble.directory_url, "agree_tos": True, "timeout": 5,
               "trust_roots": [str(pebble.tls_root)]},
        "certificates": certs,
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_two_certificates_one_graceful_reload_and_a_typo_refused(
    tmp_path: Path, pebble: Pebble, apache: Apache
) -> None:
    root = tmp_path / "issuing-roots.pem"
    root.write_bytes(pebble.issuing_roots(0))
    config = api.load_config(str(write(tmp_path, pebble, apache, root)))
    report = api.renew(config)
    assert api.exit_status(report) == 0, [r.error for r in report.results]
    store = Store(tmp_path / "state")
    live = {name: store.current(name) for name in NAMES}
    for name, host in NAMES.items():
        release = live[name]
        assert release is not None
        assert served(apache.port, host, root) == release.fingerprint_sha256
    reloads = [s for r in report.results for s in r.steps if s.step == "reload"]
    assert len(reloads) == 2 and all("once for 2 certificates" in s.detail for s in reloads)
    tests = [s for r in report.results for s in r.steps if s.step == "preflight"]
    assert all("one config test for 2" in s.detail for s in tests), tests

    (apache.confdir / "conf-enabled" / "typo.conf").write_text("SSLEngin on\n")
    report = api.renew(config, force=True)
    assert api.exit_status(report) == 1
    for result in report.results:
        assert result.error_code == "precheck", result
        error = result.error or ""
        assert "Invalid command 'SSLEngin'" in error, error
        assert "unshare" not in error and "certagent-" not in error.split(":")[0]
    for name, host in NAMES.items():  # nothing swapped, nothing ordered
        release = live[name]
        assert release is not None
        assert store.current(name) == release
        assert served(apache.port, host, root) == release.fingerprint_sha256
