"""Acceptance: the config-test gate sees the candidate in the most common layout
(issue #15): a site fragment rendered into sites-enabled/, included by a main
nginx.conf that certagent does not render, tested with plain `nginx -t`. A typo in the
fragment is refused at preflight: exit 1, nothing swapped, nothing reloaded."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent.store import Store
from testbed.nginx import Nginx
from testbed.pebble import Pebble

from .conftest import run_subprocess
from .test_deploy_nginx import pebble_root as pebble_root
from .test_deploy_nginx import served

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the gate's mount namespace needs root"),
]


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Nginx]:
    """nginx whose main config includes sites-enabled/*.conf (the Debian layout)."""
    server = Nginx(tmp_path / "nginx").start()
    enabled = server.prefix / "sites-enabled"
    enabled.mkdir()
    p = server.prefix
    server.conf.write_text(
        f"pid {server.pid_file};\nerror_log {p / 'error.log'};\nworker_shutdown_timeout 5s;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n  access_log {p / 'access.log'};\n"
        f"  server {{ listen 127.0.0.1:{server.port} ssl default_server;\n"
        f"    ssl_certificate {p / 'bootstrap.pem'}; ssl_certificate_key {p / 'bootstrap.key'};\n"
        "    location / { return 200 'bootstrap'; } }\n"
        f"  include {enabled}/*.conf;\n}}\n"
    )
    subprocess.run(server.reload_argv, check=True)
    yield server
    server.stop()


def write(tmp_path: Path, pebble: Pebble, root: Path, nginx: Nginx) -> Path:
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "template_dirs": [str(tmp_path / "templates")],
        "ca": {"directory": pebble.directory_url, "agree_tos": True,
               "trust_roots": [str(pebble.tls_root)]},
        "policy": {"failure_backoff": 0},
        "certificates": {"www": {
            "names": ["www.example.test"],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": pebble.http_port}},
            "deploy": {
                "templates": [{"template": "site.conf.j2",
                               "dest": str(nginx.prefix / "sites-enabled" / "www.conf")}],
                "vars": {"listen": f"127.0.0.1:{nginx.port}"},
                "test": ["nginx", "-t", "-p", str(nginx.prefix), "-c", str(nginx.conf)],
                "hook": nginx.reload_argv,
                "endpoints": [f"127.0.0.1:{nginx.port}"],
                "verify_timeout": 3,
                "trust_roots": [str(root)],
            },
        }},
    }  # fmt: skip
    path = tmp_path / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_a_typo_in_a_site_fragment_is_refused_at_preflight(
    tmp_path: Path, pebble: Pebble, pebble_root: Path, sites: Nginx
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    good = (Path(__file__).parent.parent / "templates" / "nginx" / "site.conf.j2").read_text()
    (templates / "site.conf.j2").write_text(good)
    path = write(tmp_path, pebble, pebble_root, sites)
    first = run_subprocess("-c", str(path), "renew")
    assert first.returncode == 0, first.stderr
    store = Store(tmp_path / "state")
    live = store.current("www")
    assert live is not None and served(sites.port, pebble_root) == live.fingerprint_sha256
    reloads = (sites.prefix / "error.log").read_text().count("reconfiguring")

    # a typo nginx -t catches only in context: the fragment alone parses as text
    (templates / "site.conf.j2").write_text(
        good.replace("ssl_certificate_key", "ssl_certficate_key")
    )
    broken = run_subprocess("-c", str(path), "--json", "renew", "--force")
    assert broken.returncode == 1, broken.stderr
    (cert,) = json.loads(broken.stdout)["certificates"]
    steps = {s["step"]: s for s in cert["steps"]}
    # found before ordering (issue #23): the candidate rendered against the live
    # certificate, in the gate's view; the server's words name the operator's file
    detail = steps["precheck"]["detail"]
    assert not steps["precheck"]["ok"] and "ssl_certficate_key" in detail, detail
    fragment = sites.prefix / "sites-enabled" / "www.conf"
    assert f"{fragment}:" in detail and detail.index("ssl_certficate_key") < detail.index("`nginx")
    assert "unshare" not in detail and "mount --bind" not in detail
    assert "order" not in steps and "swap" not in steps and "reload" not in steps
    now = store.current("www")
    assert now is not None and now.release_id == live.release_id  # nothing swapped
    assert served(sites.port, pebble_root) == live.fingerprint_sha256
    assert (sites.prefix / "error.log").read_text().count("reconfiguring") == reloads
    # the live fragment is untouched outside the gate's namespace
    assert "ssl_certificate_key" in (sites.prefix / "sites-enabled" / "www.conf").read_text()
