"""Acceptance: a certificate deployed to a real PostgreSQL (Debian's), as
docs/web-servers.md says to: the key and chain linked where the server reads them,
`state_group: ssl-cert` (the group Debian's package puts the postgres user in) so that
the server's own user reads the key through the links, `user: postgres` checked before
the swap, `pg_ctl reload` as the hook, verified over PostgreSQL's own STARTTLS; then a
renewal served after the reload, and a rollback when the server will not take the key."""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from certagent import api
from certagent.model import Outcome
from certagent.store import Store
from testbed import pki
from testbed.pebble import Pebble
from testbed.postgres import Postgres, bindir

pytestmark = pytest.mark.integration

NAME = "db.example.test"


@pytest.fixture
def base() -> Iterator[Path]:
    """Under /tmp with 0755: the postgres user must reach its data directory and the
    store's releases (pytest's folders are 0700 root)."""
    if shutil.which("runuser") is None or not Path("/usr/lib/postgresql").is_dir():
        pytest.fail("PostgreSQL is not installed: run `make deps`")
    folder = Path(tempfile.mkdtemp(prefix="certagent-pgdeploy-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres(base: Path) -> Iterator[Postgres]:
    """Started on a throwaway certificate of its own, which certagent's links replace."""
    now = dt.datetime.now(dt.UTC)
    cert, key = pki.issue(pki.make_ca("bootstrap"), ["bootstrap.test"], now,
                          now + dt.timedelta(days=1))  # fmt: skip
    server = Postgres(base / "pg").start(cert, key)
    yield server
    server.stop()


def write(base: Path, pebble: Pebble, db: Postgres, root: Path) -> Path:
    as_postgres = ["runuser", "-u", "postgres", "--"]
    cfg = {
        "state_dir": str(base / "state"),
        "state_group": "ssl-cert",
        "ca": {"directory": pebble.directory_url, "agree_tos": True, "timeout": 5,
               "trust_roots": [str(pebble.tls_root)]},
        "certificates": {"db": {
            "names": [NAME],
            "challenge": {"type": "http-01",
                          "standalone": {"address": "127.0.0.1", "port": pebble.http_port}},
            "deploy": {
                "links": [{"file": "fullchain", "dest": str(db.data / "server.crt")},
                          {"file": "key", "dest": str(db.data / "server.key")}],
                "user": "postgres",
                "hook": [*as_postgres, str(bindir() / "pg_ctl"), "reload", "-D", str(db.data)],
                "endpoints": [{"address": f"127.0.0.1:{db.port}", "sni": NAME,
                               "starttls": "postgres"}],
                "trust_roots": [str(root)],
                "verify_timeout": 15,
            },
        }},
    }  # fmt: skip
    path = base / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def test_postgres_takes_the_key_through_the_links_and_serves_each_renewal(
    base: Path, pebble: Pebble, postgres: Postgres
) -> None:
    root = base / "issuing-roots.pem"
    root.write_bytes(pebble.issuing_roots(0))
    config = api.load_config(str(write(base, pebble, postgres, root)))
    report = api.renew(config)
    first = report.results[0]
    assert api.exit_status(report) == 0, first.error
    store = Store(base / "state")
    live = store.current("db")
    assert live is not None
    key = Path(os.path.realpath(postgres.data / "server.key"))
    assert key == live.path / "privkey.pem"
    mode = os.stat(key)
    # what PostgreSQL accepts for a key it does not own: root's, group-readable at most
    assert (stat.S_IMODE(mode.st_mode), mode.st_uid) == (0o640, 0)
    assert mode.st_gid == grp.getgrnam("ssl-cert").gr_gid
    verify = next(s for s in first.steps if s.step == "verify")
    assert verify.ok and f"127.0.0.1:{postgres.port}" in verify.detail, verify
    found = api.check(config)  # PostgreSQL's STARTTLS, the live release served
    assert found.state.name == "OK", found.text
    assert all(e["current_release"] for e in found.to_json()["endpoints"]), found.text

    report = api.renew(config, force=True)  # the next renewal: linked, reloaded, served
    assert api.exit_status(report) == 0, report.results[0].error
    second = store.current("db")
    assert second is not None and second.release_id != live.release_id
    assert os.path.realpath(postgres.data / "server.crt") == str(second.path / "fullchain.pem")
    assert all(e["current_release"] for e in api.check(config).to_json()["endpoints"])


def test_a_key_postgres_cannot_read_is_refused_before_the_swap(
    base: Path, pebble: Pebble, postgres: Postgres
) -> None:
    """Without `state_group` the key is root's alone (0600): `user: postgres` refuses the
    deploy before anything served changes, and the issued certificate is kept for the
    operator's next run."""
    root = base / "issuing-roots.pem"
    root.write_bytes(pebble.issuing_roots(0))
    path = write(base, pebble, postgres, root)
    cfg = json.loads(path.read_text())
    del cfg["state_group"]
    path.write_text(json.dumps(cfg))
    report = api.renew(api.load_config(str(path)))
    result = report.results[0]
    assert api.exit_status(report) == 1
    assert result.outcome is Outcome.FAILED_BEFORE_SWAP, result
    assert "postgres" in (result.error or ""), result.error
    assert not (postgres.data / "server.key").is_symlink()  # the server's own, untouched
    assert Store(base / "state").current("db") is None

    cfg["state_group"] = "ssl-cert"  # the operator's fix, then the obvious next command
    path.write_text(json.dumps(cfg))
    report = api.renew(api.load_config(str(path)))
    assert api.exit_status(report) == 0, report.results[0].error
    steps = " ".join(f"{s.step}: {s.detail}" for s in report.results[0].steps)
    assert "order" not in {s.step for s in report.results[0].steps}, steps  # kept, not reordered
