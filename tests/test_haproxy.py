"""Acceptance: haproxy as haproxy users run it (issue #26, item 1), with Debian's
haproxy: the operator's haproxy.cfg stays theirs (a plain-http redirect frontend, an
admin socket, a TLS bind reading a crt directory); certagent links each certificate's
combined PEM into that directory (`deploy.links`), tests the operator's file with the
candidates in view, reloads through the master once, and several certificates share
one frontend, SNI picking each. A typo in the operator's file is refused before
ordering; a client probing during renewals never sees a failed or wrong handshake."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent.store import Store
from testbed.haproxy import Haproxy
from testbed.pebble import Pebble

from .conftest import run_subprocess
from .test_deploy_nginx import pebble_root as pebble_root

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the gate's mount namespace needs root"),
]

NAMES = ("www1", "www2")


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Haproxy]:
    server = Haproxy(tmp_path / "haproxy").start()
    yield server
    server.stop()


def write(tmp_path: Path, pebble: Pebble, root: Path, hp: Haproxy, runtime: bool = False) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {"directory": pebble.directory_url, "agree_tos": True,
               "trust_roots": [str(pebble.tls_root)]},
        "certificates": {name: {
            "names": [f"{name}.example.test"],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": pebble.http_port}},
            "deploy": {
                "links": [{"file": "bundle", "dest": str(hp.certs / f"{name}.pem")}],
                "test": hp.test_argv,
                "hook": hp.reload_argv,
                "endpoints": [{"address": f"127.0.0.1:{hp.port}",
                               "sni": f"{name}.example.test"}],
                "verify_timeout": 5,
                "trust_roots": [str(root)],
                **({"haproxy_socket": str(hp.socket)} if runtime else {}),
            },
        } for name in NAMES},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def served(port: int, sni: str, root: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(root))
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
          ctx.wrap_socket(sock, server_hostname=sni) as tls):  # fmt: skip
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_certificates_go_into_the_operators_crt_directory_and_the_config_stays_theirs(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, haproxy: Haproxy
) -> None:
    original = haproxy.conf.read_text()
    path = write(tmp_path, pebble, pebble_root, haproxy)
    first = run_subprocess("-c", str(path), "--json", "renew")
    assert first.returncode == 0, first.stdout + first.stderr
    store = Store(tmp_path / "state")
    for name in NAMES:  # one frontend, SNI picks each
        live = store.current(name)
        assert live is not None
        assert served(haproxy.port, f"{name}.example.test", pebble_root) == live.fingerprint_sha256
        link = haproxy.certs / f"{name}.pem"
        assert link.is_symlink() and link.resolve() == (live.path / "bundle.pem").resolve()
    # the operator's file is untouched: not a link, same bytes, its other frontend answers
    assert not haproxy.conf.is_symlink() and haproxy.conf.read_text() == original
    assert (haproxy.certs / "00-bootstrap.pem").is_file()
    request = urllib.request.Request(f"http://127.0.0.1:{haproxy.http_port}/x")
    with pytest.raises(urllib.error.HTTPError) as redirect:  # 301 is not followed to TLS here
        urllib.request.build_opener(_NoRedirect).open(request, timeout=5)
    assert redirect.value.code == 301
    assert haproxy.reloads() == 1  # both certificates, one reload


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_a_typo_in_the_operators_config_is_refused_before_ordering(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, haproxy: Haproxy
) -> None:
    path = write(tmp_path, pebble, pebble_root, haproxy)
    assert run_subprocess("-c", str(path), "renew").returncode == 0
    store = Store(tmp_path / "state")
    before = {n: served(haproxy.port, f"{n}.example.test", pebble_root) for n in NAMES}
    reloads = haproxy.reloads()
    haproxy.conf.write_text(haproxy.conf.read_text().replace("timeout client", "timeout clinet"))
    result = run_subprocess("-c", str(path), "--json", "renew", "--force")
    assert result.returncode == 1, result.stdout + result.stderr
    for cert in json.loads(result.stdout)["certificates"]:
        steps = {s["step"]: s for s in cert["steps"]}
        detail = steps["precheck"]["detail"]
        assert not steps["precheck"]["ok"] and "clinet" in detail, detail
        assert str(haproxy.conf) in detail and "unshare" not in detail  # its words first
        assert "order" not in steps and "swap" not in steps
    after = {n: served(haproxy.port, f"{n}.example.test", pebble_root) for n in NAMES}
    assert after == before and haproxy.reloads() == reloads
    assert {n: (store.current(n) or None) is not None for n in NAMES} == dict.fromkeys(NAMES, True)


@pytest.mark.parametrize("runtime", [False, True], ids=["reload", "runtime-api"])
def test_a_client_probing_during_renewals_never_sees_a_failed_or_wrong_handshake(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, haproxy: Haproxy, runtime: bool
) -> None:
    path = write(tmp_path, pebble, pebble_root, haproxy, runtime)
    assert run_subprocess("-c", str(path), "renew").returncode == 0
    ctx = ssl.create_default_context(cafile=str(pebble_root))
    stop, failures, handshakes = threading.Event(), [], [0]

    def probe() -> None:
        while not stop.is_set():
            for name in NAMES:
                try:  # verified: chain and the name; any failure is a finding
                    with (socket.create_connection(("127.0.0.1", haproxy.port), timeout=5) as s,
                          ctx.wrap_socket(s, server_hostname=f"{name}.example.test")):  # fmt: skip
                        handshakes[0] += 1
                except (OSError, ssl.SSLError) as exc:
                    failures.append(f"{name}: {exc}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            result = run_subprocess("-c", str(path), "renew", "--force")
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures[:5]
    assert handshakes[0] > 20
    store = Store(tmp_path / "state")
    for name in NAMES:
        live = store.current(name)
        assert live is not None
        assert served(haproxy.port, f"{name}.example.test", pebble_root) == live.fingerprint_sha256


def test_the_runtime_api_updates_served_certificates_without_a_reload(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, haproxy: Haproxy
) -> None:
    path = write(tmp_path, pebble, pebble_root, haproxy, runtime=True)
    first = run_subprocess("-c", str(path), "--json", "renew")
    assert first.returncode == 0, first.stdout + first.stderr
    # new certificates are unknown to haproxy: the runtime API refuses, one reload
    assert haproxy.reloads() == 1
    reload_step = next(s for s in json.loads(first.stdout)["certificates"][0]["steps"]
                       if s["step"] == "reload")  # fmt: skip
    assert "reloading instead" in reload_step["detail"]
    store = Store(tmp_path / "state")
    again = run_subprocess("-c", str(path), "--json", "renew", "--force")
    assert again.returncode == 0, again.stdout + again.stderr
    assert haproxy.reloads() == 1  # replaced in place: no reload at all
    for cert in json.loads(again.stdout)["certificates"]:
        step = next(s for s in cert["steps"] if s["step"] == "reload")
        assert "no reload" in step["detail"], step
    for name in NAMES:  # verified by certagent, and by us: the new one is served
        live = store.current(name)
        assert live is not None
        assert served(haproxy.port, f"{name}.example.test", pebble_root) == live.fingerprint_sha256
