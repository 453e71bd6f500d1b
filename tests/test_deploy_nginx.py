"""Acceptance: deploy to a real nginx (Debian) with certificates from a real pebble."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certagent.store import Store
from testbed.nginx import Nginx
from testbed.pebble import Pebble

from .conftest import run_subprocess

pytestmark = pytest.mark.integration
NAME = "www.example.test"


@pytest.fixture(scope="session")
def pebble_root(pebble: Pebble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("roots") / "pebble-root.pem"
    path.write_bytes(pebble.issuing_roots())
    return path


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx").start()
    yield server
    server.stop()


def served(port: int, root: Path | None) -> str:
    """The SHA-256 of the leaf a TLS client gets from 127.0.0.1:port with SNI NAME."""
    ctx = ssl.create_default_context(cafile=str(root)) if root else ssl._create_unverified_context()  # noqa: S323
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


class Setup:
    def __init__(self, tmp_path: Path, pebble: Pebble, root: Path, nginx: Nginx) -> None:
        self.tmp = tmp_path
        self.pebble = pebble
        self.root = root
        self.nginx = nginx
        self.path = tmp_path / "certagent.yaml"
        self.store = Store(tmp_path / "state")

    def write(
        self,
        *,
        hook: Any = None,
        template: str = "nginx/nginx.conf.j2",
        endpoints: list[str] | None = None,
        extra: dict[str, Any] | None = None,
        extra_vars: dict[str, Any] | None = None,
    ) -> Path:
        deploy: dict[str, Any] = {
            "templates": [{"template": template, "dest": str(self.nginx.conf)}],
            "vars": {**self.nginx.template_vars(), **(extra_vars or {})},
            "test": self.nginx.test_argv,
            "hook": hook or {"argv": self.nginx.reload_argv, "timeout": 10},
            "endpoints": endpoints or [f"127.0.0.1:{self.nginx.port}"],
            "verify_timeout": 3,
            "trust_roots": [str(self.root)],
            **(extra or {}),
        }
        cfg = {
            "state_dir": str(self.tmp / "state"),
            "template_dirs": [str(self.tmp / "templates")],
            "ca": {
                "directory": self.pebble.directory_url,
                "agree_tos": True,
                "trust_roots": [str(self.pebble.tls_root)],
            },
            "policy": {"failure_backoff": 0},  # the retry rule is under test, not the backoff
            "certificates": {
                "www": {
                    "names": [NAME],
                    "challenge": {
                        "type": "http-01",
                        "standalone": {"address": "127.0.0.1", "port": self.pebble.http_port},
                    },
                    "deploy": deploy,
                }
            },
        }
        self.path.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        return self.path

    def current_fp(self) -> str:
        current = self.store.current("www")
        assert current is not None
        return current.fingerprint_sha256

    def shell_hook(self, on_deploy: str, timeout: float = 10) -> dict[str, Any]:
        """A hook that misbehaves on deploy and reloads nginx on rollback."""
        reload = " ".join(self.nginx.reload_argv)
        script = f'if [ "$CERTAGENT_ACTION" = deploy ]; then {on_deploy}; fi; exec {reload}'
        return {"shell": script, "timeout": timeout}


@pytest.fixture
def setup(tmp_path: Path, pebble: Pebble, pebble_root: Path, nginx: Nginx) -> Setup:
    return Setup(tmp_path, pebble, pebble_root, nginx)


def first_deploy(setup: Setup, run) -> str:
    result = run("-c", str(setup.write()), "renew")
    assert result.code == 0, result.err
    fp = setup.current_fp()
    assert served(setup.nginx.port, setup.root) == fp
    return fp


def test_renewal_is_served_by_nginx(setup: Setup, run) -> None:
    bootstrap = served(setup.nginx.port, None)  # self-signed, before certagent deploys
    fp = first_deploy(setup, run)
    assert fp != bootstrap
    assert setup.nginx.conf.is_symlink()
    assert (setup.nginx.conf.parent / "nginx.conf.certagent-orig").is_file()  # nothing lost
    report = json.loads(run("-c", str(setup.path), "renew", "--force", "--json").out)
    steps = [s["step"] for s in report["certificates"][0]["steps"]]
    assert steps == ["precheck", "order", "stage", "preflight", "swap", "reload", "verify"]
    new = setup.current_fp()
    assert new != fp
    assert served(setup.nginx.port, setup.root) == new


def test_invalid_template_is_stopped_by_the_gate(setup: Setup, run) -> None:
    old = first_deploy(setup, run)
    bad = setup.tmp / "templates" / "bad.conf.j2"
    bad.parent.mkdir()
    bad.write_text(
        "events {}\nhttp { server { listen {{ vars.listen }} ssl; bogus_directive on; } }\n"
    )
    result = run("-c", str(setup.write(template="bad.conf.j2")), "renew", "--force")
    assert result.code == 1
    assert "config test failed" in result.err
    assert "bogus_directive" in result.err  # nginx's own words reach the report
    assert setup.current_fp() == old
    assert served(setup.nginx.port, setup.root) == old


def test_hook_failure_rolls_back(setup: Setup, run) -> None:
    old = first_deploy(setup, run)
    result = run("-c", str(setup.write(hook=setup.shell_hook("exit 1"))), "renew", "--force")
    assert result.code == 2, result.err
    assert "ROLLED_BACK" in result.err and "exited 1" in result.err
    assert setup.current_fp() == old
    assert served(setup.nginx.port, setup.root) == old
    # the failed deploy stays pending: the next run tries again although nothing is due
    again = run("-c", str(setup.write()), "plan")
    assert "not deployed: post-run hook failed" in again.out and "no new order" in again.out
    retried = run("-c", str(setup.path), "renew", "-v")  # the same certificate, no new order
    assert retried.code == 0, retried.err
    assert "re-staged from" in retried.out and " order " not in retried.out
    assert served(setup.nginx.port, setup.root) == setup.current_fp() != old


def test_hook_that_hangs_is_killed_and_rolled_back(setup: Setup, run) -> None:
    old = first_deploy(setup, run)
    hook = setup.shell_hook("sleep 60", timeout=1)
    result = run("-c", str(setup.write(hook=hook)), "renew", "--force")
    assert result.code == 2, result.err
    assert "timed out after" in result.err
    assert served(setup.nginx.port, setup.root) == old


def test_hook_that_breaks_nginx_like_the_seed_incident(setup: Setup, run) -> None:
    """The hook drops a broken config file and reloads: nginx refuses the new config."""
    conf_d = setup.tmp / "conf.d"
    conf_d.mkdir()
    include = {"extra_http": [f"include {conf_d}/*.conf;"]}
    setup.write(extra_vars=include)
    assert run("-c", str(setup.path), "renew").code == 0
    old = setup.current_fp()
    breaking = setup.shell_hook(f"echo 'this is not nginx;' > {conf_d}/broken.conf")
    cfg = setup.write(hook=breaking, extra_vars=include)
    result = run("-c", str(cfg), "renew", "--force", "--json")
    assert result.code == 2, result.err
    cert = json.loads(result.out)["certificates"][0]
    assert cert["outcome"] == "rolled_back"
    assert 'unknown directive "this"' in cert["error"]  # nginx's refusal reaches the report
    steps = {s["step"]: s["ok"] for s in cert["steps"]}
    assert steps == {
        "precheck": True,
        "order": True,
        "stage": True,
        "preflight": True,
        "swap": True,
        "reload": False,
        "rollback": True,
        "reload-old": False,
        "verify-old": True,
    }
    assert setup.current_fp() == old
    assert served(setup.nginx.port, setup.root) == old
    # The broken file is still there: the next attempt is stopped by the config-test gate.
    gated = run("-c", str(cfg), "renew", "--force")
    assert gated.code == 1 and "config test failed" in gated.err


def test_endpoint_serving_something_else_rolls_back(setup: Setup, run, tmp_path: Path) -> None:
    old = first_deploy(setup, run)
    # A second node that certagent does not reload: it keeps serving the old certificate.
    release = setup.store.current("www")
    assert release is not None
    stale = Nginx(tmp_path / "stale")
    stale.prefix.mkdir()
    stale_conf = setup.nginx.conf.read_text().replace(str(setup.nginx.prefix), str(stale.prefix))
    stale_conf = stale_conf.replace(f"127.0.0.1:{setup.nginx.port}", f"127.0.0.1:{stale.port}")
    try:
        stale.conf.write_text(stale_conf)
        from testbed.proc import Server, port_open

        stale.server = Server(stale.argv("-g", "daemon off;"), stale.prefix / "stdout.log")
        stale.server.wait_until(port_open("127.0.0.1", stale.port))
        endpoints = [f"127.0.0.1:{setup.nginx.port}", f"127.0.0.1:{stale.port}"]
        result = run("-c", str(setup.write(endpoints=endpoints)), "renew", "--force")
        assert result.code == 2, result.err
        assert f"127.0.0.1:{stale.port}" in result.err
        assert served(setup.nginx.port, setup.root) == old
    finally:
        stale.stop()


def test_old_certificate_not_served_after_rollback_is_broken(setup: Setup, run) -> None:
    """The hook stops nginx: neither the new nor the old certificate is served."""
    first_deploy(setup, run)
    stop = {"argv": [*setup.nginx.argv("-s", "stop")], "timeout": 10}
    result = run("-c", str(setup.write(hook=stop)), "renew", "--force")
    assert result.code == 3, result.err
    assert "BROKEN: the rollback failed too" in result.err
    assert "Connection refused" in result.err


def test_unreadable_key_caught_in_preflight(setup: Setup, run) -> None:
    old = first_deploy(setup, run)
    result = run("-c", str(setup.write(extra={"user": "nobody"})), "renew", "--force")
    assert result.code == 1
    assert "user nobody cannot enter" in result.err
    assert setup.current_fp() == old
    assert served(setup.nginx.port, setup.root) == old


def test_sigkill_between_swap_and_verify_is_completed_next_run(setup: Setup, run) -> None:
    old = first_deploy(setup, run)
    marker = setup.tmp / "killed-once"
    hook = setup.shell_hook(
        f"if [ ! -e {marker} ]; then touch {marker}; kill -KILL $PPID; exit 1; fi"
    )
    cfg = setup.write(hook=hook)
    proc = run_subprocess("-c", str(cfg), "renew", "--force")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = setup.store.read_state("www")
    assert state.pending is not None
    new = setup.current_fp()
    assert new != old  # swapped, never verified

    result = run("-c", str(cfg), "renew", "-v")
    assert result.code == 0, result.err
    assert "interrupted run swapped to" in result.out
    assert setup.store.read_state("www").pending is None
    assert served(setup.nginx.port, setup.root) == new


def test_manual_rollback_and_redeploy(setup: Setup, run) -> None:
    old = first_deploy(setup, run)
    assert run("-c", str(setup.path), "renew", "--force").code == 0
    new = setup.current_fp()
    back = run("-c", str(setup.path), "rollback", "www")
    assert back.code == 0, back.err
    assert served(setup.nginx.port, setup.root) == old
    assert setup.current_fp() == old
    again = run("-c", str(setup.path), "deploy", "www")
    assert again.code == 0, again.err
    redeployed = setup.store.current("www")
    assert redeployed is not None and redeployed.ca == setup.pebble.directory_url
    assert served(setup.nginx.port, setup.root) == old  # deploy re-deploys what is current
    assert new != old
