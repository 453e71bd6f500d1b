"""Unit: what a rehearsal remembers (issue #15). Editing the script a hook runs, or a
file a config test names, changes the inputs, so the change is rehearsed before it
reaches production."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from certagent import config
from certagent.rehearse import inputs_digest


def cfg(tmp_path: Path, hook: str) -> config.Config:
    return config.parse(
        textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        staging:
          ca: {{directory: https://staging.invalid/dir}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
            deploy:
              hook: {hook}
              test: [sh, -n, {tmp_path / "reload.sh"}]
            staging:
              dir: {tmp_path / "staging"}
              hook: [{tmp_path / "reload.sh"}, --staging]
              test: [sh, -n, {tmp_path / "reload.sh"}]
        """),
        tmp_path / "c.yaml",
    )


def digest(c: config.Config) -> str:
    assert c.staging is not None
    return inputs_digest(c.certificates[0], c.staging, c.template_dirs)


def test_an_edited_hook_script_is_a_new_input(tmp_path: Path) -> None:
    script = tmp_path / "reload.sh"
    script.write_text("#!/bin/sh\nnginx -s reload\n")
    script.chmod(0o755)
    c = cfg(tmp_path, f"[{script}]")
    first = digest(c)
    assert digest(c) == first  # stable
    script.write_text("#!/bin/sh\nnginx -s reload; systemctl restart php-fpm\n")
    assert digest(c) != first


def test_a_program_found_on_path_is_hashed_too(tmp_path: Path) -> None:
    (tmp_path / "reload.sh").write_text("#!/bin/sh\n")
    c = cfg(tmp_path, "[sh, -c, 'nginx -s reload']")
    from certagent.rehearse import command_files

    files = command_files(c.certificates[0])
    assert any(os.path.basename(p) in ("sh", "dash", "bash") for p in files), files
    assert str(tmp_path / "reload.sh") in files


def test_an_unrehearsed_production_hook_is_a_config_error_unless_waived(tmp_path: Path) -> None:
    import pytest

    from certagent.errors import ConfigError

    base = textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        staging:
          ca: {{directory: https://staging.invalid/dir}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path}}}
            deploy: {{hook: ['true'], test: ['true']}}
            staging:
              dir: {tmp_path / "staging"}
        """)
    with pytest.raises(ConfigError) as exc:
        config.parse(base, tmp_path / "c.yaml")
    text = str(exc.value)
    assert "production post-run hook would never be rehearsed" in text
    assert "production config test would never be rehearsed" in text
    waived = base + "      hook: none\n      test: none\n"
    with pytest.raises(ConfigError, match="needs a 'reason'"):
        config.parse(waived, tmp_path / "c.yaml")
    ok = waived + "      reason: the staging box has no web server\n"
    spec = config.parse(ok, tmp_path / "c.yaml").certificates[0]
    assert spec.staging is not None and spec.staging.hook is None
