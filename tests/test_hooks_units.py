"""Unit: hook environments (issue #13): a command's own `env:` and the names certbot's
and lego's deploy hooks read, through a real child process."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from certagent import config, system
from certagent.deploy.hooks import hook_env
from certagent.errors import ConfigError
from certagent.model import KeyType, Release


def parse(hook: str, tmp_path: Path) -> config.Config:
    return config.parse(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          www:
            names: [www.example.test, example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
            deploy:
              hook: {hook}
        """),
        tmp_path / "c.yaml",
    )


def test_env_and_certbot_and_lego_names_reach_the_hook(tmp_path: Path) -> None:
    cfg = parse("{argv: [env], env: {SITE: blue, RETRIES: 3}}", tmp_path)
    spec = cfg.certificates[0]
    assert spec.deploy is not None and spec.deploy.hook is not None
    now = dt.datetime.now(dt.UTC)
    rel = Release("www", "r1", tmp_path / "r1", spec.names, KeyType.EC_P256, now, now, "ab", "CN")
    env = hook_env(spec.deploy.hook, spec, rel, "deploy", "production")
    out = system.run(list(spec.deploy.hook.argv), 10, env).output.splitlines()
    assert "SITE=blue" in out and "RETRIES=3" in out
    assert f"RENEWED_LINEAGE={tmp_path / 'r1'}" in out
    assert "RENEWED_DOMAINS=www.example.test example.test" in out
    assert f"LEGO_CERT_PATH={tmp_path / 'r1' / 'fullchain.pem'}" in out
    assert f"LEGO_CERT_KEY_PATH={tmp_path / 'r1' / 'privkey.pem'}" in out
    assert "LEGO_CERT_DOMAIN=www.example.test" in out
    assert "CERTAGENT_ACTION=deploy" in out


@pytest.mark.parametrize("bad", ["{argv: [true], env: {CERTAGENT_KEY: x}}",
                                 "{argv: [true], env: {'1X': y}}",
                                 "{argv: [true], env: [A]}",
                                 "{argv: [true], env: {A: [1]}}"])  # fmt: skip
def test_bad_env_is_a_config_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(bad, tmp_path)
    assert "deploy.hook" in str(exc.value)
