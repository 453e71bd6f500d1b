"""Unit: the peer protocol is versioned (issue #15): a release of another schema is
refused on the receiving side with both versions named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certagent import __version__, api, config
from certagent.errors import UsageError

from .fakes import minimal_yaml


def test_a_release_of_another_schema_is_refused(tmp_path: Path) -> None:
    cfg = config.parse(
        minimal_yaml(tmp_path, cert="    deploy: {endpoints: none, endpoints_reason: unit test}\n"),
        tmp_path / "c.yaml",
    )
    payload = {"schema": 99, "certagent": "9.9.9", "name": "www", "key": "", "fullchain": ""}
    with pytest.raises(UsageError) as exc:
        api.receive(cfg, "www", json.dumps(payload).encode())
    text = str(exc.value)
    assert "certagent 9.9.9" in text and f"certagent {__version__}" in text
    assert "sent release schema 99" in text
