"""Acceptance: a host that reaches its CA through an HTTPS proxy (HTTPS_PROXY, as
requests and curl read it) renews through it, TLS end to end, and NO_PROXY keeps a CA
off it. A real pebble and a CONNECT proxy on loopback (testbed/connectproxy.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from testbed.connectproxy import ConnectProxy
from testbed.pebble import Pebble

from .conftest import ROOT, write_config

pytestmark = pytest.mark.integration

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def renew(cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k.upper() not in PROXY_VARS}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "certagent", "-c", str(cfg), "renew"],
        env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_renewal_goes_through_the_proxy_unless_no_proxy_names_the_ca(
    tmp_path: Path, pebble: Pebble
) -> None:
    ca = urlsplit(pebble.directory_url).netloc
    with ConnectProxy() as proxy:
        (tmp_path / "via").mkdir()
        done = renew(write_config(tmp_path / "via", pebble), HTTPS_PROXY=proxy.url)
        assert done.returncode == 0, done.stderr
        assert proxy.targets and set(proxy.targets) == {ca}  # every request, tunnelled
        seen = len(proxy.targets)
        (tmp_path / "direct").mkdir()
        done = renew(write_config(tmp_path / "direct", pebble), HTTPS_PROXY=proxy.url,
                     NO_PROXY=urlsplit(pebble.directory_url).hostname or "")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert len(proxy.targets) == seen  # NO_PROXY names the CA: straight to it
    (tmp_path / "dead").mkdir()  # a proxy that is down: not silently gone around
    gone = renew(write_config(tmp_path / "dead", pebble), HTTPS_PROXY="http://127.0.0.1:9")
    assert gone.returncode == 1, gone.stderr
    assert not (tmp_path / "dead" / "state" / "certs" / "www" / "current").exists()
