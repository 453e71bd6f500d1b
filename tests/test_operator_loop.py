"""Acceptance: after a failure, the operator's next command uses what was already
issued, and the CA's word is kept (issue #23).

A real pebble behind a counting proxy (testbed/caproxy.py: every request the client
sends passes there, so orders are counted at the CA), a real nginx in the Debian
layout (a main nginx.conf certagent does not render, including sites-enabled/*.conf
where certagent renders one server block; plain `nginx -t` as the test), the default
policy. For each failure kind: break it, force a renewal, let cron run while it is
still broken, fix it, then the operator's obvious next command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent.store import Store
from testbed.caproxy import CAProxy
from testbed.nginx import Nginx
from testbed.pebble import Pebble

from .conftest import ROOT
from .test_deploy_nginx import pebble_root as pebble_root
from .test_deploy_nginx import served
from .test_gate_fragment import sites as sites

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the gate's mount namespace needs root"),
]

GOOD_SITE = (ROOT / "templates" / "nginx" / "site.conf.j2").read_text()


@pytest.fixture
def proxy(pebble: Pebble) -> Iterator[CAProxy]:
    server = CAProxy(pebble).start()
    yield server
    server.stop()


def write(
    tmp_path: Path,
    proxy: CAProxy,
    root: Path,
    nginx: Nginx,
    hook: list[str],
    certs: tuple[str, ...] = ("www",),
    policy: dict[str, object] | None = None,
) -> Path:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    if not (templates / "site.conf.j2").exists():
        (templates / "site.conf.j2").write_text(GOOD_SITE)
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "template_dirs": [str(templates)],
        "ca": {"directory": proxy.directory_url, "agree_tos": True, "timeout": 5,
               "trust_roots": [str(proxy.pebble.tls_root)]},
        "policy": policy or {},  # the default policy: failure_backoff 1 h
        "certificates": {name: {
            "names": [f"{name}.example.test"],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1",
                                         "port": proxy.pebble.http_port}},
            "deploy": {
                "templates": [{"template": "site.conf.j2",
                               "dest": str(nginx.prefix / "sites-enabled" / f"{name}.conf")}],
                "vars": {"listen": f"127.0.0.1:{nginx.port}"},
                "test": ["nginx", "-t", "-p", str(nginx.prefix), "-c", str(nginx.conf)],
                "hook": hook,
                "endpoints": [f"127.0.0.1:{nginx.port}"],
                "verify_timeout": 3,
                "trust_roots": [str(root)],
            },
        } for name in certs},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def certagent(path: Path, *args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "certagent", "-c", str(path), "--json", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert "internal error" not in done.stdout + done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


def only(report: dict[str, object]) -> dict[str, object]:
    (cert,) = report["certificates"]  # type: ignore[misc]
    assert isinstance(cert, dict)
    return cert


def live_fp(tmp_path: Path, name: str = "www") -> str:
    live = Store(tmp_path / "state").current(name)
    assert live is not None
    return live.fingerprint_sha256


# -- the four failure kinds ----------------------------------------------------------


def break_it(kind: str, tmp_path: Path, nginx: Nginx) -> list[str] | None:
    """Break one thing; returns the hook to configure (None: the good one)."""
    if kind == "template-typo":
        site = tmp_path / "templates" / "site.conf.j2"
        site.write_text(GOOD_SITE.replace("ssl_certificate_key", "ssl_certficate_key"))
    elif kind == "main-config-typo":
        text = nginx.conf.read_text()
        nginx.conf.write_text(text.replace("http {", "http {\n  bogus_directive on;", 1))
    elif kind == "hook-fails":
        return ["sh", "-c", "echo reload refused >&2; exit 1"]
    elif kind == "hook-does-not-reload":
        return ["true"]
    return None


def fix_it(kind: str, tmp_path: Path, nginx: Nginx) -> None:
    if kind == "template-typo":
        (tmp_path / "templates" / "site.conf.j2").write_text(GOOD_SITE)
    elif kind == "main-config-typo":
        nginx.conf.write_text(nginx.conf.read_text().replace("\n  bogus_directive on;", ""))


KINDS = ["template-typo", "main-config-typo", "hook-fails", "hook-does-not-reload"]
CAUGHT_BEFORE_ORDERING = {"template-typo", "main-config-typo"}


@pytest.mark.parametrize("command", ["renew", "deploy", "renew --force"])
@pytest.mark.parametrize("kind", KINDS)
def test_after_the_fix_the_next_command_deploys_what_was_issued(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx, kind: str, command: str
) -> None:
    good_hook = sites.reload_argv
    path = write(tmp_path, proxy, pebble_root, sites, good_hook)
    code, _ = certagent(path, "renew")
    assert code == 0
    first = live_fp(tmp_path)
    assert served(sites.port, pebble_root) == first and proxy.orders == 1

    bad_hook = break_it(kind, tmp_path, sites)
    path = write(tmp_path, proxy, pebble_root, sites, bad_hook or good_hook)
    proxy.reset()
    code, report = certagent(path, "renew", "--force")  # the operator forces a renewal
    cert = only(report)
    if kind in CAUGHT_BEFORE_ORDERING:
        # found by the config test of the candidate before anything went to the CA
        assert code == 1 and cert["error_code"] == "precheck", cert
        assert proxy.total == 0, proxy.hits
        assert "config test failed" in str(cert["error"])
        assert "unshare" not in str(cert["error"])  # the gate's wrapper is never shown
    else:
        assert code == 2, cert  # rolled back: the old certificate serves
        assert proxy.orders == 1
    assert served(sites.port, pebble_root) == first

    for _ in range(2):  # cron, while still broken: nothing more is ordered
        certagent(path, "renew")
    assert proxy.orders == (0 if kind in CAUGHT_BEFORE_ORDERING else 1)
    _, plan = certagent(path, "plan")
    reason = str(only(plan)["decision"]["reason"])  # type: ignore[index]
    if kind not in CAUGHT_BEFORE_ORDERING:
        assert "not deployed" in reason and "certagent deploy www" in reason, reason

    fix_it(kind, tmp_path, sites)
    path = write(tmp_path, proxy, pebble_root, sites, good_hook)
    orders = proxy.orders
    code, report = certagent(path, *command.split(), *(["www"] if command == "deploy" else []))
    cert = only(report)
    assert code == 0, cert
    # nothing was issued during the failure: only a forced renewal orders (as asked)
    more = 1 if kind in CAUGHT_BEFORE_ORDERING and command == "renew --force" else 0
    assert proxy.orders == orders + more, f"{command} ordered again after the fix: {proxy.hits}"
    served_now = served(sites.port, pebble_root)
    assert served_now == live_fp(tmp_path)  # what is served is what status says
    if kind not in CAUGHT_BEFORE_ORDERING:
        assert served_now != first  # the certificate issued during the failure
        assert cert["outcome"] == "renewed"
        assert "no new order" in str(cert["decision"]["reason"]) or command == "deploy"  # type: ignore[index]
    _, status = certagent(path, "status")
    (row,) = status["certificates"]  # type: ignore[misc]
    assert "not deployed" not in row["reason"]


def test_renew_new_order_orders_even_with_a_kept_certificate(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv)
    assert certagent(path, "renew")[0] == 0
    path = write(tmp_path, proxy, pebble_root, sites, ["true"])
    assert certagent(path, "renew", "--force")[0] == 2
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv)
    proxy.reset()
    code, report = certagent(path, "renew", "--new-order")
    assert code == 0 and proxy.orders == 1, report
    assert served(sites.port, pebble_root) == live_fp(tmp_path)


# -- the CA's word -----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_on_every_endpoint_holds_every_later_run(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx, status: int
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv,
                 certs=tuple(f"c{i}" for i in range(10)),
                 policy={"max_retry_after": "1s"})  # fmt: skip
    proxy.mode, proxy.status, proxy.retry_after = "busy", status, "3600"
    code, _report = certagent(path, "renew")
    assert code == 1
    assert proxy.total <= 2, proxy.hits  # the directory (and nothing after it)
    proxy.reset()
    for args in (("renew",), ("renew", "--force"), ("renew", "c1")):
        certagent(path, *args)
        assert proxy.total == 0, (args, proxy.hits)
    proxy.mode = "pass"  # the CA is back, but asked to wait an hour: still nothing
    assert certagent(path, "renew")[0] in (0, 1) and proxy.total == 0
    _, plan = certagent(path, "plan")
    reasons = [c["decision"]["reason"] for c in plan["certificates"]]  # type: ignore[union-attr]
    assert all("asked" in r and "Retry-After" in r for r in reasons), reasons
    assert sum("asked every client to wait until" in r for r in reasons) >= 9, reasons
    _, status_rows = certagent(path, "status")
    assert all("Retry-After" in r["reason"] for r in status_rows["certificates"])  # type: ignore[union-attr]


def test_a_429_on_one_order_holds_that_certificate_only(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv, certs=("aaa",),
                 policy={"max_retry_after": "1s"})  # fmt: skip
    proxy.busy_paths, proxy.status, proxy.retry_after = frozenset({"order"}), 429, "3600"
    code, report = certagent(path, "renew")
    assert code == 1 and only(report)["error_code"] == "ca-busy"
    proxy.reset()
    proxy.busy_paths = frozenset()
    certagent(path, "renew", "--force")
    assert proxy.total == 0, proxy.hits  # this certificate waits for the CA's word
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv, certs=("aaa", "bbb"),
                 policy={"max_retry_after": "1s"})  # fmt: skip
    code, report = certagent(path, "renew")
    outcomes = {c["name"]: c["outcome"] for c in report["certificates"]}  # type: ignore[union-attr]
    assert outcomes == {"aaa": "skipped", "bbb": "renewed"}, report
    assert proxy.orders == 1


def test_a_ca_answering_500_to_everything_gets_a_handful_of_requests(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    names = tuple(f"c{i:02d}" for i in range(50))
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv, certs=names)
    proxy.mode = "broken"
    code, report = certagent(path, "renew")
    assert code == 1
    assert proxy.total <= 5, proxy.hits  # the breaker opens after 3 answers of 500
    outcomes = [c["outcome"] for c in report["certificates"]]  # type: ignore[union-attr]
    assert outcomes.count("skipped") >= 45, outcomes  # not failed: no back-off of their own
    proxy.reset()
    code, report = certagent(path, "renew")
    assert proxy.total <= 2, proxy.hits  # the next run probes with one request
    proxy.reset()
    proxy.mode = "pass"  # the CA recovers: the probe succeeds and the rest goes out
    code, report = certagent(path, "renew")
    renewed = [c for c in report["certificates"] if c["outcome"] == "renewed"]  # type: ignore[union-attr]
    assert len(renewed) >= 45, [c["error"] for c in report["certificates"]]  # type: ignore[union-attr]


def test_already_replaced_falls_back_to_an_order_without_replaces_in_one_run(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv)
    proxy.ari = True  # the CA offers renewal information (learnt once per CA, from its directory)
    assert certagent(path, "renew")[0] == 0
    proxy.already_replaced = True
    proxy.reset()
    code, report = certagent(path, "renew")  # the window (from the proxy) is open now
    cert = only(report)
    assert code == 0 and cert["outcome"] == "renewed", cert
    assert len(proxy.replaces_seen) == 1  # asked with `replaces`, refused with 409
    assert proxy.hits["order"] >= 2 and proxy.orders == 1  # then without it, in one run
    assert served(sites.port, pebble_root) == live_fp(tmp_path)


# -- repairs and what is found before ordering --------------------------------------------


def test_a_deleted_live_release_is_redeployed_so_served_equals_status(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv)
    assert certagent(path, "renew")[0] == 0
    assert certagent(path, "renew", "--force")[0] == 0
    store = Store(tmp_path / "state")
    live = store.current("www")
    assert live is not None and served(sites.port, pebble_root) == live.fingerprint_sha256
    subprocess.run(["rm", "-rf", str(live.path)], check=True)  # by hand
    proxy.reset()
    code, report = certagent(path, "renew")
    assert code == 0, report
    assert proxy.orders == 0  # a healthy release was left: no new order
    now = store.current("www")
    assert now is not None and now.fingerprint_sha256 != live.fingerprint_sha256
    assert served(sites.port, pebble_root) == now.fingerprint_sha256  # served == status


def test_a_port_in_use_is_found_before_ordering(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv)
    taken = socket.create_server(("127.0.0.1", proxy.pebble.http_port))
    try:
        code, report = certagent(path, "renew")
    finally:
        taken.close()
    cert = only(report)
    assert code == 1 and cert["error_code"] == "precheck", cert
    assert "cannot listen" in str(cert["error"]) and proxy.total == 0


def test_the_duplicate_limit_is_known_before_ordering(
    tmp_path: Path, proxy: CAProxy, pebble_root: Path, sites: Nginx
) -> None:
    path = write(tmp_path, proxy, pebble_root, sites, sites.reload_argv)
    text = json.loads(path.read_text())
    text["ca"]["max_duplicates"] = 2
    path.write_text(json.dumps(text))
    assert certagent(path, "renew")[0] == 0
    assert certagent(path, "renew", "--force")[0] == 0
    proxy.reset()
    code, report = certagent(path, "renew", "--force")
    cert = only(report)
    assert code == 1 and cert["error_code"] == "duplicate-limit", cert
    assert "possible after" in str(cert["error"]) and proxy.total == 0, proxy.hits
    code, report = certagent(path, "renew", "--force", "--allow-duplicate")
    assert code == 0 and proxy.orders == 1
