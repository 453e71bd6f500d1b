"""Acceptance: certificates of any lifetime (issue #25), against a real step-ca issuing
24-hour certificates and a real nginx: renewed at about half their life, and `check`
OK while fresh, WARNING under a third of the life left, CRITICAL under a sixth (the
configured 14/3 days would hold a 24-hour certificate WARNING, then CRITICAL, for its
whole life)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from certagent import api
from certagent.store import Store
from testbed.nginx import Nginx
from testbed.stepca import StepCA

from .conftest import OffsetClock
from .test_deploy_nginx import served
from .test_gate_fragment import sites as sites
from .test_operator_loop import GOOD_SITE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="step-ca validates on port 80: needs root"),
]


def test_a_24_hour_certificate_is_renewed_at_half_life_and_judged_by_its_lifetime(
    tmp_path: Path, stepca: StepCA, sites: Nginx
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "site.conf.j2").write_text(GOOD_SITE)
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "template_dirs": [str(templates)],
        "ca": {"directory": stepca.directory_url, "trust_roots": [str(stepca.root)]},
        "certificates": {"www": {
            "names": ["www.example.test"],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": 80}},
            "deploy": {
                "templates": [{"template": "site.conf.j2",
                               "dest": str(sites.prefix / "sites-enabled" / "www.conf")}],
                "vars": {"listen": f"127.0.0.1:{sites.port}"},
                "test": ["nginx", "-t", "-p", str(sites.prefix), "-c", str(sites.conf)],
                "hook": sites.reload_argv,
                "endpoints": [f"127.0.0.1:{sites.port}"],
                "trust_roots": [str(stepca.root)],
            },
        }},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    config = api.load_config(str(path))
    report = api.renew(config)
    assert api.exit_status(report) == 0, report.results[0].error
    live = Store(tmp_path / "state").current("www")
    assert live is not None and served(sites.port, stepca.root) == live.fingerprint_sha256
    life = live.not_after - live.not_before
    assert dt.timedelta(hours=23) < life <= dt.timedelta(hours=25)
    # the shipped 12-hour cadence leaves one run before expiry: `config validate` says so
    (warning,) = api.validate(config)
    assert warning.startswith("www: a certificate of 2") and "policy.run_every" in warning

    def state_after(hours_left: float) -> str:
        at = live.not_after - dt.timedelta(hours=hours_left) - dt.datetime.now(dt.UTC)
        found = api.check(config, clock=OffsetClock(at))
        return found.state.name

    assert state_after(20) == "OK"  # fresh
    assert state_after(10) == "OK"
    assert state_after(7) == "WARNING"  # under a third of 24 h
    assert state_after(3) == "CRITICAL"  # under a sixth

    def due_after(hours: float) -> bool:
        at = live.not_before + dt.timedelta(hours=hours) - dt.datetime.now(dt.UTC)
        return api.plan_run(config, clock=OffsetClock(at)).results[0].decision.due

    assert not due_after(10)
    assert due_after(life.total_seconds() / 3600 / 2 + 0.1)  # half its life (no ARI)
    later = live.not_before + life / 2 + dt.timedelta(minutes=5) - dt.datetime.now(dt.UTC)
    report = api.renew(config, clock=OffsetClock(later))
    assert report.results[0].outcome.value == "renewed", report.results[0].error
    renewed = Store(tmp_path / "state").current("www")
    assert renewed is not None and renewed.release_id != live.release_id
    assert served(sites.port, stepca.root) == renewed.fingerprint_sha256
