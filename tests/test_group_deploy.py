"""Acceptance (issue #16): certificates that share one web server are deployed as a
group, against a real nginx and pebble: one config test, one reload, every endpoint
verified; a member whose candidate breaks the config test is refused without holding
back the others; a member that fails verification rolls the whole group back with one
reload, and the others are deployed again without it. Orders run concurrently."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certagent.store import Store
from testbed.nginx import Nginx
from testbed.pebble import Pebble

pytestmark = pytest.mark.integration


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path / "nginx").start_including()
    yield server
    server.stop()


def served(port: int, name: str) -> str:
    ctx = ssl._create_unverified_context()  # noqa: S323 - the fingerprint is compared
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def fleet(
    tmp_path: Path,
    pebble: Pebble,
    nginx: Nginx,
    count: int,
    member: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """`count` certificates, each a server block in nginx's sites/, one nginx."""
    log = tmp_path / "calls.log"
    test = f"echo test >> {log}; exec nginx -t -p {nginx.prefix} -c {nginx.conf}"
    hook = f"echo reload $CERTAGENT_ACTION >> {log}; exec {' '.join(nginx.reload_argv)}"
    certs = {}
    for i in range(count):
        name = f"s{i:02d}.group.test"
        deploy = {
            "templates": [
                {"template": "nginx/site.conf.j2", "dest": str(nginx.sites / f"s{i:02d}.conf")}
            ],
            "vars": {"listen": f"127.0.0.1:{nginx.port}"},
            "test": {"shell": test},
            "hook": {"shell": hook},
            "endpoints": [{"address": f"127.0.0.1:{nginx.port}", "sni": name}],
            "verify_timeout": 3,
            "trust_roots": [str(tmp_path / "root.pem")],
        }
        deploy.update((member or {}).get(f"s{i:02d}", {}))
        certs[f"s{i:02d}"] = {
            "names": [name],
            "challenge": {
                "type": "http-01",
                "standalone": {"address": "127.0.0.1", "port": pebble.http_port},
            },
            "deploy": deploy,
        }
    (tmp_path / "root.pem").write_bytes(pebble.issuing_roots())
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {
            "directory": pebble.directory_url,
            "agree_tos": True,
            "trust_roots": [str(pebble.tls_root)],
        },
        "policy": {"failure_backoff": 0, "concurrency": 4},
        "certificates": certs,
    }
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text().splitlines()


def renew(run, path: Path) -> tuple[int, dict[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    result = run("-c", str(path), "--json", "renew")
    report = json.loads(result.out)
    return result.code, {c["name"]: c for c in report["certificates"]}


def test_a_group_is_tested_and_reloaded_once(
    tmp_path: Path, pebble: Pebble, nginx: Nginx, run
) -> None:
    path = fleet(tmp_path, pebble, nginx, 8)
    code, certs = renew(run, path)
    assert code == 0, certs
    # one config test before ordering (issue #23) and one before the swap, one reload
    assert calls(tmp_path) == ["test", "test", "reload deploy"]
    store = Store(tmp_path / "state")
    for name, cert in certs.items():
        assert cert["outcome"] == "renewed"
        current = store.current(name)
        assert current is not None
        assert served(nginx.port, f"{name}.group.test") == current.fingerprint_sha256
        reload_step = next(s for s in cert["steps"] if s["step"] == "reload")
        assert "once for 8 certificates" in reload_step["detail"]


def test_a_broken_member_is_refused_and_holds_back_no_other(
    tmp_path: Path, pebble: Pebble, nginx: Nginx, run
) -> None:
    # s03's candidate breaks nginx's configuration (an invalid `root` directive)
    path = fleet(tmp_path, pebble, nginx, 6, {"s03": {"vars": {
        "listen": f"127.0.0.1:{nginx.port}", "root": "/a b c"}}})  # fmt: skip
    code, certs = renew(run, path)
    assert code == 1
    broken = certs["s03"]
    assert broken["outcome"] == "failed_before_swap" and "config test failed" in broken["error"]
    assert not (nginx.sites / "s03.conf").exists()  # nothing of it went live
    assert {c["outcome"] for n, c in certs.items() if n != "s03"} == {"renewed"}
    # the group test, s03's own, the others' again; then one reload
    assert calls(tmp_path).count("reload deploy") == 1
    store = Store(tmp_path / "state")
    for name in ("s00", "s05"):
        current = store.current(name)
        assert current is not None
        assert served(nginx.port, f"{name}.group.test") == current.fingerprint_sha256


def test_a_member_failing_verification_rolls_the_group_back_then_the_rest_goes_live(
    tmp_path: Path, pebble: Pebble, nginx: Nginx, run
) -> None:
    # s02 is verified on an SNI that nginx answers with the bootstrap certificate
    path = fleet(tmp_path, pebble, nginx, 5, {"s02": {"endpoints": [
        {"address": f"127.0.0.1:{nginx.port}", "sni": "nowhere.group.test"}]}})  # fmt: skip
    code, certs = renew(run, path)
    assert code == 2, {n: (c["outcome"], c.get("error")) for n, c in certs.items()}
    assert certs["s02"]["outcome"] == "rolled_back"
    assert not (nginx.sites / "s02.conf").exists()  # its first deploy is undone
    assert {c["outcome"] for n, c in certs.items() if n != "s02"} == {"renewed"}
    assert [c for c in calls(tmp_path) if c.startswith("reload")] == [
        "reload deploy", "reload rollback", "reload deploy"]  # fmt: skip
    store = Store(tmp_path / "state")
    for name in ("s00", "s01", "s03", "s04"):
        current = store.current(name)
        assert current is not None
        assert served(nginx.port, f"{name}.group.test") == current.fingerprint_sha256
        assert any(s["step"] == "regroup" for s in certs[name]["steps"])
