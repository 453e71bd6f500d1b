"""Unit: the metrics follow Prometheus' naming rules (what promlint checks): base
units (seconds, never days), counters end in _total, timestamps in
_timestamp_seconds, every family has HELP and TYPE, and the text parses."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from certagent import api, config, metrics

from .fakes import LocalIssuer, minimal_yaml


def test_metric_names_follow_the_prometheus_conventions(tmp_path: Path) -> None:
    cfg = config.parse(
        minimal_yaml(tmp_path),
        tmp_path / "c.yaml",
    )
    api.renew(cfg, issuer=LocalIssuer())
    text = metrics.render(cfg)
    families = list(text_string_to_metric_families(text))
    assert families
    for family in families:
        name = family.name
        assert re.fullmatch(r"certagent_[a-z_]+", name), name
        assert not re.search(r"_(days|hours|minutes|milliseconds|ms|percent)\b", name), name
        if family.type == "counter":
            assert f"{name}_total" in text, name  # the parser strips _total
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), name
        assert f"# HELP {name}" in text and f"# TYPE {name}" in text


def test_build_info_and_a_certificate_waiting_to_be_deployed(tmp_path: Path) -> None:
    from certagent import __version__

    cfg = config.parse(minimal_yaml(tmp_path), tmp_path / "c.yaml")
    api.renew(cfg, issuer=LocalIssuer())
    text = metrics.render(cfg)
    assert f'certagent_build_info{{version="{__version__}"}} 1' in text
    assert 'certagent_certificate_undeployed{certificate="www"} 0' in text
