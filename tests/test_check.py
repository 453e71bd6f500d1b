"""Acceptance: `certagent check` against real servers: nginx (TLS), PostgreSQL and an
SMTP server (STARTTLS), a refused port and a port that never speaks."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certagent import api, config
from testbed import pki
from testbed.nginx import Nginx
from testbed.pebble import Pebble
from testbed.postgres import Postgres
from testbed.proc import Server, free_port, port_open

from .conftest import OffsetClock, write_config

pytestmark = pytest.mark.integration
NOW = dt.datetime.now(dt.UTC)
HOST = "www.check.test"


class Pki:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.root = pki.make_ca("check test root")
        self.other = pki.make_ca("a root nobody trusts")
        self.root_file = pki.write(folder / "root.pem", self.root.pem())

    def pair(self, name: str, names: list[str], *, ca: pki.Authority | None = None, **kw: Any):
        cert, key = pki.issue(ca or self.root, names, **kw)
        return pki.write(self.folder / f"{name}.pem", cert), pki.write(
            self.folder / f"{name}.key", key, 0o600
        )

    def self_signed(self, name: str, host: str) -> tuple[Path, Path]:
        cert, key = pki.self_signed([host])
        leaf = pki.write(self.folder / f"{name}.pem", cert)
        return leaf, pki.write(self.folder / f"{name}.key", key, 0o600)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("check-pki"))


@pytest.fixture(scope="module")
def sites(certs: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """One nginx, one port per case."""
    cases = {
        "valid": certs.pair("valid", [HOST], not_after=NOW + dt.timedelta(days=60)),
        "expired": certs.pair(
            "expired",
            [HOST],
            not_before=NOW - dt.timedelta(days=30),
            not_after=NOW - dt.timedelta(days=2),
        ),
        "wrong-host": certs.pair("wrong", ["other.check.test"]),
        "self-signed": certs.self_signed("self", HOST),
        "untrusted": certs.pair("untrusted", [HOST], ca=certs.other),
        # a 90-day certificate with 5 days left (a fresh 6-day one would be OK: issue #25)
        "soon": certs.pair("soon", [HOST], not_before=NOW - dt.timedelta(days=85),
                           not_after=NOW + dt.timedelta(days=5)),
    }
    ports = {case: free_port() for case in cases}
    server = Nginx(tmp_path_factory.mktemp("check-nginx")).start_sites(
        [(ports[c], HOST, cert, key) for c, (cert, key) in cases.items()]
    )
    yield ports
    server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def monitor_config(
    tmp_path: Path, pebble: Pebble, endpoints: list[dict[str, Any]], **monitor: Any
) -> Path:
    path = write_config(tmp_path, pebble)
    body = json.dumps({"timeout": "1s", **monitor, "endpoints": endpoints})
    path.write_text(path.read_text() + f"monitor: {body}\n")
    return path


def by_label(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["label"]: e for e in report["endpoints"]}


def test_nginx_endpoints_each_get_the_right_state_and_message(
    tmp_path: Path, pebble: Pebble, certs: Pki, sites: dict[str, int], silent_port: int, run
) -> None:
    endpoints = [
        {"name": case, "address": f"127.0.0.1:{port}", "sni": HOST} for case, port in sites.items()
    ]
    endpoints += [
        {"name": "refused", "address": f"127.0.0.1:{free_port()}", "sni": HOST},
        {"name": "silent", "address": f"127.0.0.1:{silent_port}", "sni": HOST},
    ]
    path = monitor_config(tmp_path, pebble, endpoints, trust_roots=[str(certs.root_file)])
    result = run("-c", str(path), "--json", "check", *[e["name"] for e in endpoints])
    assert result.code == 2, result.out + result.err
    report = json.loads(result.out)
    assert report["state"] == "CRITICAL"
    found = by_label(report)
    expect = {
        "valid": ("OK", "valid for 60.0 more days"),
        "soon": ("WARNING", "expires in 5.0 days (warning at 14 days)"),
        "expired": ("CRITICAL", "certificate expired"),
        "wrong-host": ("CRITICAL", f"not valid for {HOST} (it names other.check.test)"),
        "self-signed": ("CRITICAL", "untrusted: self-signed certificate"),
        "untrusted": ("CRITICAL", "untrusted chain: unable to get local issuer certificate"),
        "refused": ("CRITICAL", "connection refused"),
        "silent": ("CRITICAL", "no TLS answer within 1 s"),
    }
    for label, (state, words) in expect.items():
        assert found[label]["state"] == state, (label, found[label])
        assert words in found[label]["message"], (label, found[label]["message"])
    # What was served is still described when it is rejected: the expired one's date.
    assert found["expired"]["days_left"] < -1.9 and found["expired"]["trusted"] is False
    assert found["valid"]["issuer"] == "CN=check test root"


def test_plugin_output_one_line_summary_perfdata_and_detail(
    tmp_path: Path, pebble: Pebble, certs: Pki, sites: dict[str, int], run
) -> None:
    endpoints = [
        {"name": c, "address": f"127.0.0.1:{sites[c]}", "sni": HOST} for c in ("valid", "soon")
    ]
    path = monitor_config(tmp_path, pebble, endpoints, trust_roots=[str(certs.root_file)])
    result = run("-c", str(path), "check", "valid", "soon")
    assert result.code == 1  # WARNING
    first, *rest = result.out.strip().split("\n")
    assert first.startswith("CERTAGENT WARNING - 2 endpoint(s), 1 warning; soon: expires in 5.0")
    assert "| 'valid'=60.00;14:;3:;; 'soon'=5.00;14:;3:;;" in first
    assert rest[0].startswith(f"[OK] valid (127.0.0.1:{sites['valid']}, SNI {HOST})")
    assert rest[1].startswith("[WARNING] soon")


@pytest.fixture(scope="module")
def postgres(certs: Pki) -> Iterator[Postgres]:
    if shutil.which("runuser") is None or not Path("/usr/lib/postgresql").is_dir():
        pytest.fail("PostgreSQL is not installed: run `make deps`")
    cert, key = pki.issue(certs.root, ["db.check.test"], not_before=NOW - dt.timedelta(days=85),
                          not_after=NOW + dt.timedelta(days=5))  # fmt: skip
    server = Postgres(Path(tempfile.mkdtemp(prefix="certagent-pg-"))).start(cert, key)
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def test_postgres_starttls_expiring_in_5_days_is_warning_then_expired_is_critical(
    tmp_path: Path, pebble: Pebble, certs: Pki, postgres: Postgres, run
) -> None:
    endpoints = [
        {"name": "db", "address": f"127.0.0.1:{postgres.port}", "sni": "db.check.test",
         "starttls": "postgres"}
    ]  # fmt: skip
    path = monitor_config(tmp_path, pebble, endpoints, trust_roots=[str(certs.root_file)])
    result = run("-c", str(path), "--json", "check", "db")
    db = by_label(json.loads(result.out))["db"]
    assert (db["state"], result.code) == ("WARNING", 1), db
    assert db["starttls"] == "postgres" and 4.9 < db["days_left"] <= 5

    cert, key = pki.issue(
        certs.root,
        ["db.check.test"],
        not_before=NOW - dt.timedelta(days=10),
        not_after=NOW - dt.timedelta(hours=1),
    )
    postgres.install_cert(cert, key)
    postgres.reload()
    path = monitor_config(
        tmp_path, pebble, endpoints, trust_roots=[str(certs.root_file)], timeout="3s"
    )
    db = await_state(path, "db", "CRITICAL")
    assert "certificate expired" in db["message"]


def await_state(path: Path, label: str, state: str) -> dict[str, Any]:
    """PostgreSQL reloads asynchronously: check until the new certificate shows (10 s)."""
    cfg = config.load(path)
    found: dict[str, Any] = {}
    for _ in range(200):
        found = by_label(api.check(cfg, [label]).to_json())[label]
        if found["state"] == state:
            return found
        time.sleep(0.05)  # polling a condition: the reload has no completion signal
    raise AssertionError(f"{label} never became {state}: {found}")


@pytest.fixture(scope="module")
def smtp(certs: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("smtp")
    cert, key = certs.pair("smtp", ["mail.check.test"])
    port = free_port()
    argv = [sys.executable, "-m", "testbed.smtp", "--port", str(port)]
    argv += ["--cert", str(cert), "--key", str(key), "--maildir", str(folder / "mail")]
    root = Path(__file__).resolve().parent.parent
    server = Server(argv, folder / "smtp.log", env={"PYTHONPATH": str(root)}, cwd=root)
    server.wait_until(port_open("127.0.0.1", port), what=f"SMTP port {port}")
    yield port
    server.stop()


def test_smtp_starttls_with_a_valid_certificate_is_ok(
    tmp_path: Path, pebble: Pebble, certs: Pki, smtp: int, run
) -> None:
    endpoints = [
        {"name": "relay", "address": f"127.0.0.1:{smtp}", "sni": "mail.check.test",
         "starttls": "smtp", "warning_days": 10, "critical_days": 2}
    ]  # fmt: skip
    path = monitor_config(tmp_path, pebble, endpoints, trust_roots=[str(certs.root_file)])
    result = run("-c", str(path), "check", "relay")
    assert result.code == 0, result.out
    assert result.out.startswith("CERTAGENT OK - 1 endpoint(s)")
    assert "via smtp STARTTLS" in result.out


def test_every_configured_certificate_is_checked_without_a_monitor_section(
    tmp_path: Path, pebble: Pebble, certs: Pki, run
) -> None:
    names = [f"site{i}.check.test" for i in range(5)]
    port = free_port()
    pairs = [certs.pair(f"site{i}", [n]) for i, n in enumerate(names)]
    server = Nginx(tmp_path / "nginx").start_sites(
        [(port, n, cert, key) for n, (cert, key) in zip(names, pairs, strict=True)]
    )
    try:
        certificates: dict[str, Any] = {}
        for i, n in enumerate(names):
            certificates[f"site{i}"] = {
                "names": [n],
                "challenge": {"type": "http-01", "standalone": {"port": pebble.http_port}},
                "deploy": {
                    "endpoints": [f"127.0.0.1:{port}"],
                    "trust_roots": [str(certs.root_file)],
                },
            }
        path = tmp_path / "five.yaml"
        cfg = {
            "state_dir": str(tmp_path / "state"),
            "ca": {"directory": pebble.directory_url, "agree_tos": True},
            "certificates": certificates,
        }
        path.write_text(json.dumps(cfg))  # JSON is YAML
        result = run("-c", str(path), "--json", "check")
        report = json.loads(result.out)
        assert result.code == 0, result.out
        assert sorted(e["certificate"] for e in report["endpoints"]) == [
            f"site{i}" for i in range(5)
        ]
        # each one got its own certificate by SNI
        for e in report["endpoints"]:
            assert e["names"] == [names[int(e["certificate"][-1])]]
            assert e["current_release"] is None  # nothing issued by us yet
    finally:
        server.stop()


def test_a_renew_run_3_days_old_with_a_1_day_limit_is_critical(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = monitor_config(tmp_path, pebble, [], max_renew_age="1d")
    cfg = config.load(path)
    result = run("-c", str(path), "check")
    assert result.code == 2 and "no completed renew run in the history" in result.out
    # a real renew run, recorded three days in the past
    api.renew(cfg, clock=OffsetClock(dt.timedelta(days=-3)))
    result = run("-c", str(path), "check")
    assert result.code == 2, result.out
    assert "the last completed renew run was 72.0 h ago (limit 24 h)" in result.out
    # ...and a current one is fine (the renewed certificates are not served anywhere
    # here, so only the watcher is looked at)
    api.renew(cfg, force=True)
    watcher = api.check(cfg).watcher
    assert watcher is not None and watcher.state.name == "OK"
    # A full check leaves its findings for the metrics.
    families = {
        f.name: f for f in text_string_to_metric_families(run("-c", str(path), "metrics").out)
    }
    samples = families["certagent_endpoint_check_state"].samples
    assert sorted(s.labels["endpoint"] for s in samples) == [
        "www example.test:443",
        "www www.example.test:443",
    ]
    assert all(s.value == 2 for s in samples)  # the names do not resolve in here: CRITICAL
    assert families["certagent_check_timestamp_seconds"].samples[0].value > 0


def test_a_broken_config_is_unknown_to_the_monitoring_system(tmp_path: Path, run) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ca: {directory: nope}\n")
    result = run("-c", str(path), "check")
    assert result.code == 3
    assert result.out.startswith("CERTAGENT UNKNOWN - ")


def test_plugin_options_probe_one_host_without_a_config(
    sites: dict[str, int], certs: Pki, run
) -> None:
    """-H/--sni/--trust-root/-w/-C/-t as monitoring systems call plugins (issue #13)."""
    base = ["check", "-H", f"127.0.0.1:{sites['soon']}", "--sni", HOST,
            "--trust-root", str(certs.root_file)]  # fmt: skip
    result = run("-c", "/nonexistent/certagent.yaml", *base)
    assert result.code == 1 and result.out.startswith("CERTAGENT WARNING"), result.out
    assert re.search(r"\| '127\.0\.0\.1:\d+'=[45]\.\d+;14:;3:", result.out)  # perfdata
    result = run(*base, "-w", "3", "-C", "1")
    assert result.code == 0, result.out
    result = run(*base, "-w", "10", "-C", "6", "-t", "2")
    assert result.code == 2, result.out
    untrusted = run("check", "-H", f"127.0.0.1:{sites['soon']}", "--sni", HOST)
    assert untrusted.code == 2 and "untrusted" in untrusted.out


def test_unknown_reason_is_on_stdout(run, tmp_path: Path) -> None:
    result = run("-c", str(tmp_path / "missing.yaml"), "check")
    assert result.code == 3 and result.out.startswith("CERTAGENT UNKNOWN - ")
    assert "cannot read" in result.out


def test_a_certificate_deployed_to_postgres_is_verified_and_watched_over_starttls(
    tmp_path: Path, pebble: Pebble, postgres: Postgres, run
) -> None:
    """Issue #15: deploy endpoints speak STARTTLS, so a database's certificate is
    verified after its hook and watched by `check` like any web server's."""
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.issuing_roots())
    data = postgres.data
    hook = (
        f'install -o postgres -m 0644 "$CERTAGENT_FULLCHAIN" {data}/server.crt && '
        f'install -o postgres -m 0600 "$CERTAGENT_KEY" {data}/server.key && '
        f'kill -HUP "$(head -n 1 {data}/postmaster.pid)"'
    )
    path = write_config(tmp_path, pebble, {"db": ["db.check.test"]})
    endpoint = f"127.0.0.1:{postgres.port}"
    path.write_text(
        path.read_text()
        + "    deploy:\n"
        + f"      hook: {{shell: '{hook}', timeout: 20}}\n"
        + f"      endpoints: [{{address: '{endpoint}', starttls: postgres}}]\n"
        + f"      trust_roots: [{root}]\n"
        + "      verify_timeout: 10\n"
    )
    result = run("-c", str(path), "--json", "renew")
    assert result.code == 0, result.err
    (cert,) = json.loads(result.out)["certificates"]
    verify = [s for s in cert["steps"] if s["step"] == "verify"]
    assert verify and verify[0]["ok"], cert["steps"]
    text = path.read_text().replace("    deploy:\n", "    deploy:\n", 1)
    path.write_text(
        text.replace(f"      trust_roots: [{root}]\n", f"      trust_roots: [{root}]\n", 1)
    )
    checked = json.loads(run("-c", str(path), "--json", "check").out)
    db = checked["endpoints"][0]
    assert db["starttls"] == "postgres" and db["state"] == "OK" and db["current_release"] is True


def test_a_deployed_certificate_without_endpoints_is_unknown_not_ok(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = write_config(tmp_path, pebble, {"db": ["db.check.test"]})
    base = path.read_text()
    path.write_text(base + "    deploy: {hook: ['true'], endpoints: []}\n")
    assert run("-c", str(path), "config", "validate").code == 78
    path.write_text(base + "    deploy: {hook: ['true'], endpoints: none, "
                    "endpoints_reason: a hardware appliance we cannot reach}\n")  # fmt: skip
    result = run("-c", str(path), "check")
    assert result.code == 3 and "not watched: a hardware appliance" in result.out
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)  # a full check records there
    as_json = run("-c", str(path), "--json", "check")  # written an endpoint at a time
    assert as_json.code == 3 and json.loads(as_json.out)["endpoints"][0]["state"] == "UNKNOWN"
    recorded = json.loads((tmp_path / "state" / "check.json").read_text())  # streamed too
    assert recorded["state"] == "UNKNOWN" and len(recorded["endpoints"]) == 1
