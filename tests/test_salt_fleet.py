"""Acceptance (issue #18): a fleet through a real Salt master and four real minions on
loopback, each minion with its own certagent configuration, state directory and nginx,
all against one pebble: the rollout runner goes canary first, then batches, and stops at
the first failure; an unreachable minion is reported; a keepalived pair goes BACKUP
first; `certagent.fleet_status` gives one table and an exit status."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certagent.store import Store
from testbed.nginx import Nginx
from testbed.pebble import Pebble
from testbed.proc import Server, port_open
from testbed.salt_cluster import SALT_BIN, SaltCluster, SaltMinion

pytestmark = pytest.mark.integration
IDS = ("m1", "m2", "m3", "m4")


@pytest.fixture(scope="module")
def fleet_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pebble, Path]]:
    """One pebble, and one web server on its http-01 port serving a webroot that every
    minion writes its tokens into."""
    work = tmp_path_factory.mktemp("fleet-ca")
    pebble = Pebble(work / "pebble").start()
    webroot = work / "webroot"
    webroot.mkdir()
    web = Server(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(webroot),
            str(pebble.http_port),
        ],
        work / "web.log",
    )
    web.wait_until(port_open("127.0.0.1", pebble.http_port), what="http-01 web server")
    yield pebble, webroot
    web.stop()
    pebble.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaltCluster]:
    if not (SALT_BIN / "salt-master").is_file():
        pytest.fail("build/salt-venv is missing: run `make salt-venv` (`make test` does)")
    work = tmp_path_factory.mktemp("salt")
    minions = [
        SaltMinion(i, work / f"{i}.yaml", grains)
        for i, grains in zip(
            IDS,
            (
                {},
                {},
                {"certagent_pair": "p1", "certagent_role": "master"},
                {"certagent_pair": "p1", "certagent_role": "backup"},
            ),
            strict=True,
        )
    ]
    for m in minions:
        m.certagent_config.write_text("{}")
    salt = SaltCluster(work).start(minions)
    print(f"salt master and {len(minions)} minions up in {salt.started:.1f} s")
    yield salt
    salt.stop()


class Fleet:
    def __init__(self, tmp: Path, cluster: SaltCluster, pebble: Pebble, webroot: Path) -> None:
        self.tmp, self.cluster, self.pebble, self.webroot = tmp, cluster, pebble, webroot
        self.nginx: dict[str, Nginx] = {}
        (tmp / "templates").mkdir()
        for m in IDS:
            self.nginx[m] = Nginx(tmp / f"nginx-{m}", names=(f"{m}.fleet.test",)).start()
        self.write()

    def write(self, broken: set[str] = frozenset(), typo: bool = False) -> None:  # type: ignore[assignment]
        if typo:  # a template change with a typo, pushed to every minion at once
            shipped = Path(__file__).resolve().parent.parent / "templates" / "nginx"
            text = (
                (shipped / "nginx.conf.j2")
                .read_text()
                .replace("ssl_certificate ", "ssl_certifcate ")
            )
            (self.tmp / "templates" / "nginx").mkdir(exist_ok=True)
            (self.tmp / "templates" / "nginx" / "nginx.conf.j2").write_text(text)
        for m in self.cluster.minions:
            nginx = self.nginx[m.id]
            cfg = {
                "state_dir": str(self.tmp / f"state-{m.id}"),
                "template_dirs": [str(self.tmp / "templates")],
                "ca": {
                    "directory": self.pebble.directory_url,
                    "agree_tos": True,
                    "trust_roots": [str(self.pebble.tls_root)],
                },
                "policy": {"failure_backoff": 0},
                "certificates": {
                    "www": {
                        "names": [f"{m.id}.fleet.test"],
                        "challenge": {"type": "http-01", "webroot": str(self.webroot)},
                        "deploy": {
                            "templates": [
                                {"template": "nginx/nginx.conf.j2", "dest": str(nginx.conf)}
                            ],
                            "vars": nginx.template_vars(),
                            "test": ["/bin/false"] if m.id in broken else nginx.test_argv,
                            "hook": nginx.reload_argv,
                            "endpoints": [f"127.0.0.1:{nginx.port}"],
                            "verify_timeout": 5,
                            "trust_roots": [str(self.tmp / "issuing.pem")],
                        },
                    }
                },
            }
            m.certagent_config.write_text(json.dumps(cfg))
        (self.tmp / "issuing.pem").write_bytes(self.pebble.issuing_roots())

    def rollout(self, *args: str) -> tuple[int, dict[str, Any]]:
        start = time.monotonic()
        proc = self.cluster.run("certagent.rollout", *args)
        print(f"rollout {' '.join(args)}: {time.monotonic() - start:.1f} s")
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(proc.stdout + proc.stderr) from None
        return proc.returncode, data

    def live(self, m: str) -> str | None:
        current = Store(self.tmp / f"state-{m}").current("www")
        return current.release_id if current else None

    def conf_digest(self, m: str) -> str:
        return hashlib.sha256(self.nginx[m].conf.read_bytes()).hexdigest()

    def stop(self) -> None:
        for n in self.nginx.values():
            n.stop()


@pytest.fixture
def fleet(
    tmp_path: Path, cluster: SaltCluster, fleet_pebble: tuple[Pebble, Path]
) -> Iterator[Fleet]:
    pebble, webroot = fleet_pebble
    f = Fleet(tmp_path, cluster, pebble, webroot)
    yield f
    f.stop()


def test_a_good_rollout_reaches_every_minion_pair_backup_first(fleet: Fleet) -> None:
    code, data = fleet.rollout("tgt=*", "batch=2")
    assert code == 0, data
    assert data["result"] is True and data["unreachable"] == []
    plan = data["batches"]
    assert plan[0] == ["m1"]  # the canary alone
    where = {m: i for i, batch in enumerate(plan) for m in batch}
    assert where["m4"] < where["m3"]  # the pair's BACKUP before its MASTER, never together
    for m in IDS:
        assert data["minions"][m]["exit_status"] == 0
        assert fleet.live(m) is not None
    print(f"peak RSS (MiB): {fleet.cluster.peak_rss()}")  # for the note


def test_a_template_typo_stops_at_the_canary_and_leaves_the_rest_untouched(fleet: Fleet) -> None:
    before = {m: fleet.conf_digest(m) for m in IDS}
    fleet.write(typo=True)
    code, data = fleet.rollout("tgt=*", "batch=2", "canary=m2")
    assert code == 1, data
    assert data["stopped_at"] == "m2" and data["minions"]["m2"]["exit_status"] == 1
    assert sorted(data["untouched"]) == ["m1", "m3", "m4"]
    for m in ("m1", "m3", "m4"):
        assert fleet.live(m) is None  # nothing ordered, nothing deployed
        assert fleet.conf_digest(m) == before[m]  # its nginx config byte-identical
    assert fleet.conf_digest("m2") == before["m2"]  # the canary refused it before the swap
    # the operator learns why without logging in: the server's own words reach the result
    assert "config test failed" in data["minions"]["m2"]["summary"], data["minions"]["m2"]
    # and fleet_status judges by certagent's real outcome (failed_before_swap): not "all well"
    proc = fleet.cluster.run("certagent.fleet_status", "output=json")
    assert proc.returncode == 2, proc.stdout


def test_a_failure_in_the_second_batch_stops_the_third(fleet: Fleet) -> None:
    fleet.write(broken={"m2"})
    code, data = fleet.rollout("tgt=*", "batch=1", "canary=m1")
    assert code == 1
    assert data["batches"][1] == ["m2"] and data["stopped_at"] == "m2"
    assert fleet.live("m1") is not None
    for m in data["untouched"]:
        assert fleet.live(m) is None
    assert set(data["untouched"]) == {"m3", "m4"}


def test_fleet_status_is_one_table_with_an_exit_status(fleet: Fleet) -> None:
    fleet.rollout("tgt=*", "batch=4")
    proc = fleet.cluster.run("certagent.fleet_status", "output=json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, data
    assert {r["minion"] for r in data["certificates"]} == set(IDS)
    table = fleet.cluster.run("certagent.fleet_status")
    assert "m4" in table.stdout and "exit status 0" in table.stdout
    nobody = fleet.cluster.run("certagent.fleet_status", "tgt=no-such-minion*", "output=json")
    assert nobody.returncode == 2 and "no minion matches" in nobody.stdout  # not "all well"


def test_an_unreachable_minion_is_reported_and_is_no_success(fleet: Fleet) -> None:
    """m5's key is accepted, but the host is down: targeted, never answering."""
    keys = fleet.cluster.accepted_keys()
    (keys / "m5").write_bytes((keys / "m4").read_bytes())
    try:
        code, data = fleet.rollout("tgt=*", "batch=2", "canary=m2", "timeout=10")
        assert code == 1
        assert data["unreachable"] == ["m5"] and data["result"] is False
        assert all(data["minions"][m]["exit_status"] == 0 for m in IDS)
        status = fleet.cluster.run("certagent.fleet_status", "output=json", "timeout=5")
        assert status.returncode == 2 and json.loads(status.stdout)["missing"] == ["m5"]
    finally:
        (keys / "m5").unlink()
