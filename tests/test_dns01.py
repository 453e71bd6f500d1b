"""Acceptance (issue #17): dns-01 against a real BIND 9 and a pebble whose VA resolves
through that BIND (PEBBLE_VA_ALWAYS_VALID off): RFC 2136 updates signed with TSIG, a
wildcard with its apex, many names in one order with one wait, a CNAME-delegated name,
a wrong key, the records of a killed run removed by the next, and a hook that calls
`nsupdate` against the same BIND."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certagent.store import Store
from testbed.bind import Bind
from testbed.pebble import Pebble
from testbed.proc import free_port
from testbed.stepca import BINARY as STEP_CA
from testbed.stepca import StepCA

from .conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    server = Bind(tmp_path / "bind").start()
    yield server
    server.stop()


@pytest.fixture
def dns_pebble(tmp_path: Path, bind: Bind) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble", dns_server=bind.address).start()
    yield server
    server.stop()


def config(
    tmp_path: Path,
    pebble: Pebble,
    bind: Bind,
    certs: dict[str, list[str]],
    challenge: dict[str, Any] | None = None,
) -> Path:
    challenge = challenge or {
        "type": "dns-01",
        "rfc2136": {"server": "127.0.0.1", "port": bind.port, "tsig_key_file": str(bind.key_file)},
        "nameservers": [bind.address],
        "resolver": bind.address,
        "propagation_timeout": 20,
    }
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {
            "directory": pebble.directory_url,
            "agree_tos": True,
            "trust_roots": [str(pebble.tls_root)],
        },
        "policy": {"failure_backoff": 0, "order_timeout": 60},
        "certificates": {
            name: {"names": names, "challenge": challenge} for name, names in certs.items()
        },
    }
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def renew(run, path: Path) -> tuple[int, dict[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    result = run("-c", str(path), "--json", "renew")
    return result.code, {c["name"]: c for c in json.loads(result.out)["certificates"]}


def txt_left(bind: Bind, *names: str) -> list[str]:
    return [v for n in names for v in bind.query(f"_acme-challenge.{n}", "TXT")]


def test_a_wildcard_and_its_apex_in_one_certificate(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    path = config(tmp_path, dns_pebble, bind, {"wild": ["*.example.test", "example.test"]})
    code, certs = renew(run, path)
    assert code == 0, certs
    current = Store(tmp_path / "state").current("wild")
    assert current is not None and set(current.names) == {"*.example.test", "example.test"}
    assert txt_left(bind, "example.test") == []  # removed after validation
    assert json.loads((tmp_path / "state" / "dns-records.json").read_text()) == []


def test_fifty_names_in_one_order_wait_once(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    names = [f"n{i:02d}.example.test" for i in range(50)]
    path = config(tmp_path, dns_pebble, bind, {"many": names})
    start = time.monotonic()
    result = run("-c", str(path), "-v", "renew")
    elapsed = time.monotonic() - start
    assert result.code == 0, result.err[-3000:]
    assert "50 record(s) on every authoritative server" in result.err
    print(f"dns-01, 50 names in one order: {elapsed:.2f} s")  # the figure for the note
    assert txt_left(bind, *names[:5]) == []


def test_a_cname_delegated_name_is_updated_in_the_target_zone(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    path = config(tmp_path, dns_pebble, bind, {"del": ["delegated.example.test"]})
    code, certs = renew(run, path)
    assert code == 0, certs["del"]["error"]
    journal = bind.workdir / "acme.test.db.jnl"
    assert journal.exists()  # the update went to acme.test, the CNAME's target zone


def test_a_wrong_tsig_key_is_named_and_leaves_nothing(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text(
        'key "certagent-key" {\n\talgorithm hmac-sha256;\n'
        '\tsecret "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=";\n};\n'
    )
    challenge = {
        "type": "dns-01",
        "nameservers": [bind.address],
        "resolver": bind.address,
        "rfc2136": {"server": "127.0.0.1", "port": bind.port, "tsig_key_file": str(wrong)},
    }
    path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]}, challenge)
    code, certs = renew(run, path)
    assert code == 1
    error = certs["www"]["error"]
    assert "certagent-key" in error and str(wrong) in error
    assert "d3Jvbmc" not in error  # never the secret
    assert txt_left(bind, "www.example.test") == []


def test_a_server_that_never_gets_the_record_is_named_and_the_record_removed(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    challenge = {
        "type": "dns-01",
        "rfc2136": {"server": "127.0.0.1", "port": bind.port, "tsig_key_file": str(bind.key_file)},
        "nameservers": [bind.address, "127.0.0.1:9"],  # nothing answers on port 9
        "resolver": bind.address,
        "propagation_timeout": 1,
    }
    path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]}, challenge)
    code, certs = renew(run, path)
    assert code == 1
    assert "127.0.0.1:9 does not serve TXT" in certs["www"]["error"]
    assert txt_left(bind, "www.example.test") == []  # removed on the timeout too
    assert json.loads((tmp_path / "state" / "dns-records.json").read_text()) == []


def test_a_killed_run_leaves_records_the_next_run_removes(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind
) -> None:
    """kill -9 while the CA validates: the journal lists the record; the next run (a
    no-op for another certificate would do) removes it."""
    # nameservers that never answer make the run wait in the propagation check
    challenge = {
        "type": "dns-01",
        "nameservers": ["127.0.0.1:9"],
        "resolver": bind.address,
        "propagation_timeout": 60,
        "rfc2136": {"server": "127.0.0.1", "port": bind.port, "tsig_key_file": str(bind.key_file)},
    }
    path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]}, challenge)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "certagent", "-c", str(path), "renew"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = tmp_path / "state" / "dns-records.json"
    deadline = time.monotonic() + 30
    while not txt_left(bind, "www.example.test") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert txt_left(bind, "www.example.test"), "the record was never published"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(journal.read_text())  # the killed run's record is listed
    # the next run, with working nameservers: the leftover goes first
    good = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]})
    result = subprocess.run(
        [sys.executable, "-m", "certagent", "-c", str(good), "renew"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "an earlier run left" in result.stderr
    assert txt_left(bind, "www.example.test") == []
    assert json.loads(journal.read_text()) == []


def test_a_hook_that_calls_nsupdate(tmp_path: Path, dns_pebble: Pebble, bind: Bind, run) -> None:
    hook = tmp_path / "nsupdate-hook.sh"
    hook.write_text(
        "#!/bin/sh\nset -e\n"
        'case "$1" in present) op=add ;; cleanup) op=delete ;; *) exit 2 ;; esac\n'
        f'printf "server 127.0.0.1 {bind.port}\\nupdate %s %s 60 TXT \\"%s\\"\\nsend\\n" '
        f'"$op" "$2" "$3" | nsupdate -k {bind.key_file}\n'
        f'echo "$1 $2 $CERTAGENT_DNS_DOMAIN" >> {tmp_path}/hook.log\n'
    )
    hook.chmod(0o755)
    challenge = {
        "type": "dns-01",
        "hook": {"argv": [str(hook)], "timeout": 20},
        "nameservers": [bind.address],
        "resolver": bind.address,
    }
    path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]}, challenge)
    code, certs = renew(run, path)
    assert code == 0, certs
    calls = (tmp_path / "hook.log").read_text().split("\n")
    assert calls[0] == "present _acme-challenge.www.example.test. www.example.test"
    assert calls[1].startswith("cleanup _acme-challenge.www.example.test.")
    assert txt_left(bind, "www.example.test") == []


def test_a_wildcard_by_dns01_and_its_apex_by_http01(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    path = config(
        tmp_path, dns_pebble, bind, {"mixed": ["*.mixed.example.test", "mixed.example.test"]}
    )
    cfg = json.loads(path.read_text())
    http = {"type": "http-01", "standalone": {"address": "127.0.0.1", "port": dns_pebble.http_port}}
    cfg["certificates"]["mixed"]["challenges"] = {"mixed.example.test": http}
    path.write_text(json.dumps(cfg))
    code, certs = renew(run, path)
    assert code == 0, certs["mixed"]["error"]
    assert txt_left(bind, "mixed.example.test") == []


def test_tls_alpn_01_for_one_name(tmp_path: Path, dns_pebble: Pebble, bind: Bind, run) -> None:
    challenge = {
        "type": "tls-alpn-01",
        "standalone": {"address": "127.0.0.1", "port": dns_pebble.tls_port},
    }
    path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]}, challenge)
    code, certs = renew(run, path)
    assert code == 0, certs["www"]["error"]


def test_tls_alpn_01_on_a_port_in_use_is_named(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    with socket.create_server(("127.0.0.1", dns_pebble.tls_port)):
        challenge = {
            "type": "tls-alpn-01",
            "standalone": {"address": "127.0.0.1", "port": dns_pebble.tls_port},
        }
        path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]}, challenge)
        code, certs = renew(run, path)
    assert code == 1
    error = certs["www"]["error"]
    assert f"cannot listen on 127.0.0.1:{dns_pebble.tls_port}" in error and "in use" in error


def test_a_lagging_secondary_is_waited_for(tmp_path: Path) -> None:
    """Two authoritative servers; the secondary stops for a while (SIGSTOP): the run
    waits until both serve the record before the CA is asked, then validates."""
    secondary_port = free_port()
    primary = Bind(tmp_path / "primary", secondary_port=secondary_port).start()
    secondary = Bind(tmp_path / "secondary", port=secondary_port, primary=primary)
    pebble = None
    try:
        secondary.start()
        pebble = Pebble(tmp_path / "pebble", dns_server=primary.address).start()
        challenge = {
            "type": "dns-01",
            "rfc2136": {"server": "127.0.0.1", "port": primary.port,
                        "tsig_key_file": str(primary.key_file)},
            "nameservers": [primary.address, secondary.address],
            "resolver": primary.address,
            "propagation_timeout": 60,
        }  # fmt: skip
        path = config(tmp_path, pebble, primary, {"www": ["www.example.test"]}, challenge)
        secondary.pause()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "certagent", "-c", str(path), "-v", "renew"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not txt_left(primary, "www.example.test") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert txt_left(primary, "www.example.test"), "never published"
        time.sleep(1.0)  # the lag under test: the secondary has not got it yet
        assert proc.poll() is None  # still waiting for the secondary
        secondary.resume()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        waited = float(err.split("on every authoritative server in ")[1].split(" s")[0])
        assert waited >= 1.0
    finally:
        if pebble is not None:
            pebble.stop()
        if secondary.server is not None:
            secondary.resume()
        secondary.stop()
        primary.stop()


@pytest.mark.skipif(not STEP_CA.is_file(), reason="make step-ca builds it")
def test_the_rehearsal_on_step_ca_validates_dns01_too(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind, run
) -> None:
    """step-ca's ACME provisioner validates dns-01 through its --resolver (the BIND)."""
    stepca = StepCA(tmp_path / "step-ca", resolver=bind.address).start()
    try:
        path = config(tmp_path, dns_pebble, bind, {"www": ["www.example.test"]})
        cfg = json.loads(path.read_text())
        (tmp_path / "staging-dir").mkdir()
        cfg["staging"] = {
            "ca": {"directory": stepca.directory_url, "trust_roots": [str(stepca.root)]}
        }
        cfg["certificates"]["www"]["deploy"] = {
            "hook": ["/bin/true"],
            "endpoints": "none",
            "endpoints_reason": "no server here",
        }
        cfg["certificates"]["www"]["staging"] = {
            "dir": str(tmp_path / "staging-dir"),
            "hook": ["/bin/true"],
        }
        path.write_text(json.dumps(cfg))
        code, certs = renew(run, path)
        assert code == 0, certs["www"]["error"]
        steps = [s["step"] for s in certs["www"]["steps"]]
        assert "rehearse" in " ".join(steps), steps
        assert Store(tmp_path / "state" / "staging").current("www") is not None
        assert txt_left(bind, "www.example.test") == []
    finally:
        stepca.stop()


def test_a_hook_without_a_resolver_uses_the_systems(
    tmp_path: Path, dns_pebble: Pebble, bind: Bind
) -> None:
    """No `resolver:`: CNAMEs and the zone are asked of the system's resolver, which
    here (in this process only) is dnspython's default resolver pointed at the BIND."""
    import dns.resolver

    from certagent import api
    from certagent import config as config_mod

    hook = tmp_path / "hook.sh"
    hook.write_text(
        "#!/bin/sh\nset -e\n"
        'case "$1" in present) op=add ;; cleanup) op=delete ;; *) exit 2 ;; esac\n'
        f'printf "server 127.0.0.1 {bind.port}\\nupdate %s %s 60 TXT \\"%s\\"\\nsend\\n" '
        f'"$op" "$2" "$3" | nsupdate -k {bind.key_file}\n'
    )
    hook.chmod(0o755)
    challenge = {"type": "dns-01", "hook": [str(hook)], "nameservers": [bind.address]}
    path = config(tmp_path, dns_pebble, bind, {"del": ["delegated.example.test"]}, challenge)
    system = dns.resolver.default_resolver
    ours = dns.resolver.Resolver(configure=False)
    ours.nameservers, ours.port = ["127.0.0.1"], bind.port
    dns.resolver.default_resolver = ours
    try:
        report = api.renew(config_mod.load(path))
    finally:
        dns.resolver.default_resolver = system
    assert report.results[0].outcome.value == "renewed", report.results[0].error


def test_wildcards_need_dns01(tmp_path: Path, run) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        json.dumps(
            {
                "state_dir": str(tmp_path / "state"),
                "ca": {"directory": "https://127.0.0.1:9/dir"},
                "certificates": {
                    "w": {
                        "names": ["*.example.test"],
                        "challenge": {"type": "http-01", "webroot": str(tmp_path)},
                    }
                },
            }
        )
    )
    result = run("-c", str(path), "config", "validate")
    assert result.code == 78
    assert "needs challenge type dns-01" in result.err
