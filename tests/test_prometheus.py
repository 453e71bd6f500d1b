"""Acceptance: alerting that fits Prometheus (issue #26, item 4). The shipped rules pass
`promtool check rules`, and `promtool test rules` fires each alert on series taken from
real `certagent metrics` output (a 6-day certificate from a real pebble, deployed to a
TLS endpoint and checked), shifted so that the test's time 0 is the moment the metrics
were read, with one value changed per case. The shipped Grafana dashboard queries only
metrics and labels certagent emits."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from certagent import api, metrics
from testbed.pebble import Pebble

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "certagent.rules.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "certagent-dashboard.json"
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing (Debian's prometheus package; make deps installs it)")
    return found


@pytest.fixture
def live_endpoint(tmp_path: Path) -> Iterator[int]:
    """A TLS server on loopback serving whatever `www`'s current release is, read anew
    for every connection (a web server that reloaded)."""
    current = tmp_path / "state" / "certs" / "www" / "current"
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(current / "fullchain.pem", current / "privkey.pem")
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    done.set()
    thread.join(5)
    sock.close()


def real_metrics(tmp_path: Path, make_pebble: type[Pebble], port: int) -> tuple[str, float]:
    """`certagent metrics` after a real renewal, deploy and check; and when it was read."""
    ca = make_pebble(tmp_path / "pebble", validity_seconds=6 * 86400).start()
    roots = tmp_path / "issuing-roots.pem"
    roots.write_bytes(ca.issuing_roots(0))
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": {"directory": ca.directory_url, "agree_tos": True, "timeout": 5,
               "trust_roots": [str(ca.tls_root)]},
        "certificates": {"www": {
            "names": ["www.example.test"],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": ca.http_port}},
            "deploy": {"endpoints": [f"127.0.0.1:{port}"], "trust_roots": [str(roots)],
                       "verify_timeout": 10},
        }},
    }  # fmt: skip
    (tmp_path / "certagent.yaml").write_text(json.dumps(cfg))
    config = api.load_config(str(tmp_path / "certagent.yaml"))
    report = api.renew(config)
    assert api.exit_status(report) == 0, report.results[0].error
    found = api.check(config)
    assert found.state.name == "OK", found.text
    return metrics.render(config), time.time()


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
        out.append((m["name"], labels, float(m["value"])))
    return out


def series(samples: list[tuple[str, dict[str, str], float]], now: float, hours: int,
           change: dict[str, float]) -> list[dict[str, str]]:  # fmt: skip
    """promtool input series, one per sample, constant for `hours` (1h steps); times
    shifted so that 0 is `now`; `change` sets a metric's value instead."""
    out = []
    for name, labels, value in samples:
        value = change.get(name, value)
        if name.endswith("_timestamp_seconds"):
            value -= now
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        out.append({"series": f"{name}{{{text}}}", "values": f"{value:.3f}x{hours}"})
    return out


def alert(name: str, labels: dict[str, str], severity: str, value: str = "") -> dict[str, object]:
    """The alert as promtool reports it: labels, and the rule's annotations rendered."""
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    rule = next(r for r in rules if r["alert"] == name)

    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)
        return text.replace("{{ $value }}", value)

    annotations = {k: render(v) for k, v in rule.get("annotations", {}).items()}
    return {"exp_labels": {**labels, "alertname": name, "severity": severity},
            "exp_annotations": annotations}  # fmt: skip


def test_the_rules_fire_on_series_from_real_metrics(
    tmp_path: Path, make_pebble: type[Pebble], live_endpoint: int
) -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    text, now = real_metrics(tmp_path, make_pebble, live_endpoint)
    lint = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    samples = parse(text)
    names = {name for name, _, _ in samples}
    for needed in ("certagent_certificate_not_before_timestamp_seconds",
                   "certagent_endpoint_serves_live", "certagent_ca_breaker_open",
                   "certagent_build_info"):  # fmt: skip
        assert needed in names, text
    cert = {"certificate": "www"}
    endpoint = next(lb for n, lb, _ in samples if n == "certagent_endpoint_serves_live")
    ca = next(lb for n, lb, _ in samples if n == "certagent_ca_breaker_open")
    not_after = next(v for n, _, v in samples
                     if n == "certagent_certificate_not_after_timestamp_seconds")  # fmt: skip
    left_h = (not_after - now) / 3600  # about 144 hours: a 6-day certificate, fresh
    warn_at = int(left_h - 144 / 3) + 2  # a third of its life left, plus `for: 1h`
    crit_at = int(left_h - 144 / 6) + 2  # pending at the first hour, firing at the next
    hours = int(left_h) + 2

    def case(change: dict[str, float], tests: list[dict[str, object]]) -> dict[str, object]:
        return {"interval": "1h", "input_series": series(samples, now, hours, change),
                "alert_rule_test": tests}  # fmt: skip

    tests = [
        case({}, [  # healthy: nothing fires while fresh
            {"eval_time": "2h", "alertname": name, "exp_alerts": []}
            for name in ("CertagentCertificateExpiring", "CertagentRenewalFailing",
                         "CertagentEndpointServesAnotherCertificate", "CertagentCAUnavailable",
                         "CertagentEndpointCheckFailing", "CertagentMetricsMissing")
        ] + [
            {"eval_time": f"{warn_at}h", "alertname": "CertagentCertificateExpiring",
             "exp_alerts": [alert("CertagentCertificateExpiring", cert, "warning")]},
            {"eval_time": f"{crit_at}h", "alertname": "CertagentCertificateExpiringSoon",
             "exp_alerts": [alert("CertagentCertificateExpiringSoon", cert, "critical")]},
            {"eval_time": "38h", "alertname": "CertagentNotRunning",
             "exp_alerts": [alert("CertagentNotRunning", {}, "warning")]},
        ]),
        case({"certagent_certificate_consecutive_failures": 2}, [
            {"eval_time": "23h", "alertname": "CertagentRenewalFailing", "exp_alerts": []},
            {"eval_time": "25h", "alertname": "CertagentRenewalFailing",
             "exp_alerts": [alert("CertagentRenewalFailing", cert, "warning", "2")]},
        ]),
        case({"certagent_endpoint_serves_live": 0}, [
            {"eval_time": "2h", "alertname": "CertagentEndpointServesAnotherCertificate",
             "exp_alerts": [alert("CertagentEndpointServesAnotherCertificate", endpoint,
                                  "warning")]},
        ]),
        case({"certagent_ca_breaker_open": 1}, [
            {"eval_time": "2h", "alertname": "CertagentCAUnavailable",
             "exp_alerts": [alert("CertagentCAUnavailable", ca, "warning")]},
        ]),
    ]  # fmt: skip
    unit = tmp_path / "certagent.test.yml"
    unit.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1h",
                                    "tests": tests}, sort_keys=False))  # fmt: skip
    done = subprocess.run([tool, "test", "rules", str(unit)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    dashboard_matches(text)


def dashboard_matches(text: str) -> None:
    """Every metric a dashboard query names is one certagent emits, and every label it
    groups or shows by is one of that metric's labels."""
    # every family certagent declares (one without samples in this output, such as a
    # CA's Retry-After, is not rendered), and the labels seen on those that have them
    declared = (ROOT / "certagent" / "metrics.py").read_text()
    families = set(re.findall(r'\("(certagent_\w+)", "(?:gauge|counter)"', declared))
    assert families >= set(re.findall(r"^# TYPE (\w+) ", text, re.M))
    labels: dict[str, set[str]] = {}
    for name, lb, _ in parse(text):
        labels.setdefault(name, set()).update(lb)
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"\bcertagent_\w+", target["expr"]))
            assert used, target
            for name in used:
                assert name in families, f"{panel['title']}: {name} is not emitted"
            shown = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            shown |= set(re.findall(r"by \(([\w, ]+)\)", target["expr"])[0].replace(" ", "")
                         .split(",")) if "by (" in target["expr"] else set()  # fmt: skip
            if not all(n in labels for n in used):
                continue  # no sample here to read its labels from (the CA's hold: `ca`)
            emitted = set().union(*(labels[n] for n in used)) | {"instance", "job"}
            assert shown <= emitted, f"{panel['title']}: {shown - emitted} not emitted"
