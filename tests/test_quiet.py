"""Unit: the no-op cache (issue #28, store/quiet.py). A `renew` that found nothing to do
keeps its decisions; the next believes them only while nothing they rest on changed:
no run in between (a killed one included), the same configuration files, the same
release and state, and a time before the first moment the decision could change. What
it reports is what reading every certificate would have reported."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from certagent import api, config
from certagent.castate import note_ari
from certagent.model import Config, Outcome
from certagent.store import Store

from .conftest import OffsetClock
from .fakes import LocalIssuer
from .test_index import fleet

ROOT = Path(__file__).resolve().parent.parent


def settled(cfg: Config, issuer: LocalIssuer | None = None) -> LocalIssuer:
    """Issued, then a no-op that learns the CA's window, then one that keeps the cache."""
    issuer = issuer or LocalIssuer()
    for _ in range(3):
        api.renew(cfg, issuer=issuer)
    return issuer


def believed(cfg: Config, now: dt.datetime | None = None) -> set[str]:
    """The certificates a renew starting now would not read again. Taking the lock, this
    is a run: the cache is not believed after it."""
    store = Store(cfg.state_dir)
    with store.lock():
        store.keep_index()
        store.quiet.begin(cfg.inputs, [c.name for c in cfg.certificates])
        at = now or dt.datetime.now(dt.UTC)
        return {c.name for c in cfg.certificates if store.quiet.lookup(c.name, at)}


def report(cfg: Config, issuer: LocalIssuer) -> list[dict[str, object]]:
    return [r.to_json() for r in api.renew(cfg, issuer=issuer).results]


def test_a_settled_store_is_believed_and_says_what_reading_it_says(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    issuer = settled(cfg)
    assert (tmp_path / "state" / "lock").read_text().splitlines()[1].startswith("quiet ")
    cached = report(cfg, issuer)  # from the cache
    (tmp_path / "state" / "index.sqlite3").unlink()
    assert report(cfg, issuer) == cached  # every certificate read again
    assert all(r["outcome"] == "skipped" and r["release"] for r in cached)
    api.renew(cfg, issuer=issuer)
    assert believed(cfg) == {"c0", "c1", "c2"}


def test_any_run_under_the_lock_in_between_takes_it_away(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    settled(cfg)
    with Store(cfg.state_dir).lock():
        pass  # a deploy, a rollback, an import: whatever it did
    assert believed(cfg) == set()


def test_a_run_killed_under_the_lock_takes_it_away(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    settled(cfg)
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from certagent.store import Store\n"
        "with Store(Path(sys.argv[1])).lock():\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(cfg.state_dir)], env=env, check=False)
    assert done.returncode == -9
    assert believed(cfg) == set()


def test_a_changed_configuration_is_not_the_one_the_cache_was_for(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    settled(cfg)
    path = tmp_path / "c.yaml"
    path.write_text(path.read_text())  # the same text, written again
    again = config.load(path)
    assert again.inputs and again.inputs != cfg.inputs
    assert believed(again) == set()


def test_a_part_added_is_a_changed_configuration(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    parts = tmp_path / "certificates.d"
    parts.mkdir()
    (parts / "a.yaml").write_text("a: {names: [a.example.test]}\n")
    main = tmp_path / "c.yaml"
    main.write_text(
        f"state_dir: {tmp_path / 'state'}\nca: {{directory: https://ca.invalid/dir}}\n"
        f"certificates_dir: certificates.d\n"
        f"defaults: {{challenge: {{type: http-01, webroot: {tmp_path / 'www'}}}}}\n"
    )
    cfg = config.load(main)
    settled(cfg)
    (parts / "b.yaml").write_text("")  # an empty part: no certificate, but a file more
    (parts / "b.yaml").unlink()
    again = config.load(main)
    assert again.inputs != cfg.inputs  # the folder changed
    assert believed(again) == set()


def test_a_certificate_whose_files_changed_is_read_again_alone(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 4)
    settled(cfg)
    certs = tmp_path / "state" / "certs"
    state = certs / "c1" / "state.json"
    state.write_bytes(state.read_bytes())  # rewritten in place, the same bytes
    key = certs / "c2" / "current" / "privkey.pem"
    st = key.stat()
    key.write_bytes(key.read_bytes())
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; ctime cannot be
    link = certs / "c3" / "current"
    target = os.readlink(link)
    shutil.copytree(link.parent / target, link.parent / f"{target}-copy", symlinks=True)
    link.unlink()
    link.symlink_to(f"{target}-copy")  # another release, the same files in it
    assert believed(cfg) == {"c0"}


def test_a_damaged_key_is_renewed_by_the_next_run_whatever_its_times_say(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 2)
    issuer = settled(cfg)
    key = tmp_path / "state" / "certs" / "c0" / "current" / "privkey.pem"
    st = key.stat()
    data = key.read_bytes()
    key.write_bytes(data.replace(b"A", b"B", 1) if b"A" in data else data + b"\n")
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))
    results = {r.name: r for r in api.renew(cfg, issuer=issuer).results}
    assert results["c0"].outcome is Outcome.RENEWED
    assert "damaged" in results["c0"].decision.reason
    assert results["c1"].outcome is Outcome.SKIPPED


def test_it_holds_until_the_renewal_time_and_a_day_at_most(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 1)
    issuer = settled(cfg, LocalIssuer(lifetime=dt.timedelta(hours=30)))  # renewed ~15 h early
    renew_at = api.plan_run(cfg).results[0].decision.renew_at
    assert renew_at is not None
    assert believed(cfg, renew_at - dt.timedelta(seconds=1)) == {"c0"}
    settled(cfg, issuer)
    assert believed(cfg, renew_at) == set()
    settled(cfg, issuer)
    later = OffsetClock(renew_at - dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    (result,) = api.renew(cfg, issuer=issuer, clock=later).results
    assert result.outcome is Outcome.RENEWED  # not a cached "not due"

    (tmp_path / "long").mkdir()
    cfg = fleet(tmp_path / "long", 1)
    settled(cfg)  # 90 days: the renewal time is far, the daily re-hash is not
    now = dt.datetime.now(dt.UTC)
    assert believed(cfg, now + dt.timedelta(hours=23)) == {"c0"}
    settled(cfg)
    assert believed(cfg, now + dt.timedelta(hours=24, minutes=1)) == set()
    settled(cfg)  # the clock set back by two days since the rows were written
    assert believed(cfg, now - dt.timedelta(days=2)) == set()


def test_force_reads_everything_and_the_cache_comes_back(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    issuer = settled(cfg)
    forced = api.renew(cfg, ["c0"], force=True, issuer=issuer).results
    assert [r.outcome for r in forced] == [Outcome.RENEWED]
    after = {r.name: r for r in api.renew(cfg, issuer=issuer).results}
    assert after["c0"].release == forced[0].release  # the new one, not a cached old one
    api.renew(cfg, issuer=issuer)
    assert believed(cfg) == {"c0", "c1", "c2"}


def test_status_and_plan_say_from_it_what_reading_the_store_says(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    settled(cfg)

    def said() -> tuple[list[object], list[object]]:
        rows = [replace(r, days_left=round(r.days_left or 0)) for r in api.status(cfg)]
        return rows, [r.to_json() for r in api.plan_run(cfg).results]

    reader = Store(cfg.state_dir)
    reader.quiet.begin_reading(cfg.inputs, [c.name for c in cfg.certificates])  # no lock: kept
    assert reader.quiet.lookup("c0", dt.datetime.now(dt.UTC)) is not None
    cached = said()
    (tmp_path / "state" / "lock").write_text("1\n")  # the token gone: the store is read
    assert said() == cached
    assert [r.reason for r in cached[0]] == [r["decision"]["reason"] for r in cached[1]]


def test_the_run_that_renews_leaves_the_next_with_nothing_to_read(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    store = Store(cfg.state_dir)
    with store.lock():  # a CA seen without renewal information (pebble's case)
        note_ari(store.account_dir(cfg.ca.directory), False, dt.datetime.now(dt.UTC))
    issuer = LocalIssuer()
    assert {r.outcome for r in api.renew(cfg, issuer=issuer).results} == {Outcome.RENEWED}
    assert believed(cfg) == {"c0", "c1", "c2"}  # planned again as they were renewed
    live = {c.name: Store(cfg.state_dir).current(c.name) for c in cfg.certificates}
    first = {r.name: r for r in api.renew(cfg, issuer=issuer).results}
    assert {n: (r.outcome, r.release) for n, r in first.items()} == \
        {n: (Outcome.SKIPPED, rel.release_id if rel else None) for n, rel in live.items()}


def test_a_lock_that_is_not_a_plain_file_gives_no_token(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    settled(cfg)
    lock = tmp_path / "state" / "lock"
    text = lock.read_text()
    now = dt.datetime.now(dt.UTC)
    for plant in ("fifo", "link"):
        lock.unlink()
        if plant == "fifo":
            os.mkfifo(lock)  # reading it would wait for a writer
        else:
            (tmp_path / "elsewhere").write_text(text)
            lock.symlink_to(tmp_path / "elsewhere")
        reader = Store(cfg.state_dir)
        reader.quiet.begin_reading(cfg.inputs, [c.name for c in cfg.certificates])
        assert reader.quiet.lookup("c0", now) is None
        assert [r.due for r in api.status(cfg)] == [False, False, False]


def test_a_row_of_the_wrong_shape_is_read_again_not_believed(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    issuer = settled(cfg)
    db = sqlite3.connect(tmp_path / "state" / "index.sqlite3")
    with db:
        db.execute("UPDATE quiet SET until = 'soon' WHERE name = 'c0'")
        db.execute("UPDATE quiet SET reason = x'41' WHERE name = 'c1'")
        db.execute("UPDATE quiet SET ca = x'00' WHERE name = 'c2'")
    db.close()
    reader = Store(cfg.state_dir)
    reader.quiet.begin_reading(cfg.inputs, [c.name for c in cfg.certificates])
    now = dt.datetime.now(dt.UTC)
    assert [reader.quiet.lookup(n, now) for n in ("c0", "c1", "c2")] == [None, None, None]
    assert {r.outcome for r in api.renew(cfg, issuer=issuer).results} == {Outcome.SKIPPED}
    assert believed(cfg) == {"c0", "c1", "c2"}  # read again, and kept again
