"""Acceptance: a fallback CA (issue #25, item 3) against real CAs: two pebbles, the
preferred one stopped, then back, then refusing the names; and a step-ca taking over
from a pebble that is down. Each CA keeps its own account; the live certificate says
which CA issued it, and `status` why the preferred one was skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from certagent import api
from certagent.store import Store
from testbed.pebble import Pebble
from testbed.proc import free_port
from testbed.stepca import StepCA

pytestmark = pytest.mark.integration


def write(tmp_path: Path, cas: list[dict[str, object]], port: int) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "ca": cas,
        "certificates": {"www": {
            "names": ["www.example.test"],
            "challenge": {"type": "http-01", "standalone": {"address": "127.0.0.1",
                                                            "port": port}},
        }},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def ca_of(pebble: Pebble) -> dict[str, object]:
    return {"directory": pebble.directory_url, "agree_tos": True, "timeout": 5,
            "trust_roots": [str(pebble.tls_root)]}  # fmt: skip


def again(make_pebble: type[Pebble], old: Pebble, **settings: object) -> Pebble:
    """The same CA (same ports, same listener root file) started anew."""
    ports = {k: getattr(old, k) for k in ("port", "management_port", "dns_port",
                                          "challtest_port", "http_port", "tls_port")}  # fmt: skip
    return make_pebble(old.workdir, **ports, **settings).start()  # type: ignore[arg-type]


def live(tmp_path: Path) -> tuple[str, str | None]:
    release = Store(tmp_path / "state").current("www")
    assert release is not None
    return release.ca, release.skipped


def test_the_next_ca_issues_while_the_preferred_is_down_or_refusing(
    tmp_path: Path, make_pebble: type[Pebble]
) -> None:
    port = free_port()  # both CAs validate http-01 on certagent's standalone listener
    a = make_pebble(tmp_path / "a", http_port=port).start()
    b = make_pebble(tmp_path / "b", http_port=port).start()
    config = api.load_config(str(write(tmp_path, [ca_of(a), ca_of(b)], port)))

    report = api.renew(config)  # both up: the preferred issues
    assert api.exit_status(report) == 0, report.results[0].error
    assert live(tmp_path) == (a.directory_url, None)

    a.stop()  # the preferred CA is down
    report = api.renew(config, force=True)
    assert api.exit_status(report) == 0, report.results[0].error
    ca, skipped = live(tmp_path)
    assert ca == b.directory_url and skipped is not None and a.directory_url in skipped
    order = next(s for s in report.results[0].steps if s.step == "order")
    assert f"ordered from {b.directory_url}" in order.detail
    row = api.status(config)[0]
    assert row.ca == b.directory_url and "fallback CA" in row.reason

    a = again(make_pebble, a)  # back (a new pebble: it forgot our account)
    report = api.renew(config, force=True)
    assert api.exit_status(report) == 0, report.results[0].error
    assert live(tmp_path) == (a.directory_url, None)  # back to the preferred CA

    a.stop()
    a = again(make_pebble, a, blocklist=("example.test",))  # refuses the names
    report = api.renew(config, force=True)
    assert api.exit_status(report) == 0, report.results[0].error
    ca, skipped = live(tmp_path)
    assert ca == b.directory_url and skipped is not None and "rejectedIdentifier" in skipped
    accounts = sorted(p.name for p in (tmp_path / "state" / "accounts").iterdir())
    assert len(accounts) == 2  # one account per CA


@pytest.mark.skipif(os.geteuid() != 0, reason="step-ca validates on port 80: needs root")
def test_step_ca_takes_over_from_a_pebble_that_is_down(
    tmp_path: Path, make_pebble: type[Pebble], stepca: StepCA
) -> None:
    a = make_pebble(tmp_path / "a", http_port=80).start()
    a.stop()
    step = {"directory": stepca.directory_url, "trust_roots": [str(stepca.root)]}
    config = api.load_config(str(write(tmp_path, [ca_of(a), step], 80)))
    report = api.renew(config)
    assert api.exit_status(report) == 0, report.results[0].error
    ca, skipped = live(tmp_path)
    assert ca == stepca.directory_url and skipped is not None
    row = api.status(config)[0]
    assert row.ca == stepca.directory_url and "fallback CA" in row.reason
