"""Unit: the index (issue #16) spares no-op runs, `plan` and `status` the reading and
hashing of every certificate's files, and is never trusted over them: a changed key is
found however its times are set back, a corrupt or foreign index is ignored, a changed
state file is read, and what status says is the same with or without the index."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from certagent import api, config
from certagent.index import INDEX_FILE
from certagent.model import Config

from .fakes import LocalIssuer


def texts(path: Path) -> dict[str, str]:
    """Each certificate's row of the index, as its JSON text."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT name, entry FROM certs"))
    finally:
        db.close()


def indexed(path: Path) -> set[str]:
    return set(texts(path))


def foreign(path: Path, version: int, *statements: str) -> bytes:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    for sql in (*statements, f"PRAGMA user_version = {version}"):
        db.execute(sql)
    db.commit()
    db.close()
    return path.read_bytes()


def fleet(tmp_path: Path, count: int = 3) -> Config:
    (tmp_path / "www").mkdir(exist_ok=True)
    lines = [f"state_dir: {tmp_path / 'state'}", "ca: {directory: https://ca.invalid/dir}",
             "certificates:"]  # fmt: skip
    for i in range(count):
        lines += [f"  c{i}:", f"    names: [c{i}.example.test]",
                  f"    challenge: {{type: http-01, webroot: {tmp_path / 'www'}}}"]  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    return config.load(path)


def rows(cfg: Config) -> list[tuple[object, ...]]:
    return [(r.name, r.release, r.not_after, r.due, r.reason) for r in api.status(cfg)]


def test_renew_writes_it_a_no_op_leaves_it_and_status_is_the_same_without(tmp_path: Path) -> None:
    cfg = fleet(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, issuer=issuer)  # a no-op run: fills the index from what it read
    index = tmp_path / "state" / INDEX_FILE
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert indexed(index) == {"c0", "c1", "c2"}
    api.renew(cfg, issuer=issuer)  # the first with the CA's window known: the no-op cache
    before = index.stat().st_mtime_ns
    api.renew(cfg, issuer=issuer)
    assert index.stat().st_mtime_ns == before  # nothing new: not written again
    with_index = rows(cfg)
    index.unlink()
    assert rows(cfg) == with_index


def test_a_changed_key_is_found_whatever_its_times_say(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 1)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, issuer=issuer)
    key = tmp_path / "state" / "certs" / "c0" / "current" / "privkey.pem"
    st = key.stat()
    data = key.read_bytes()
    key.write_bytes(data.replace(b"A", b"B", 1) if b"A" in data else data + b"\n")
    os.utime(key, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; ctime cannot be
    (row,) = api.status(cfg)
    assert row.due and "damaged" in row.reason
    plan = api.plan_run(cfg)
    assert plan.results[0].decision.due


def test_a_corrupt_or_foreign_index_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 2)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    expected = rows(cfg)
    index = tmp_path / "state" / INDEX_FILE
    api.renew(cfg, issuer=issuer)  # the index is written
    good = index.read_bytes()
    damaged = good[:4096] + bytes(len(good) - 4096) if len(good) > 4096 else b"\0" * 100
    table = "CREATE TABLE certs (name TEXT PRIMARY KEY, entry TEXT NOT NULL)"
    cases = [
        b"\0\xff{",  # not a database
        b"SQLite format 3\0" + b"\xff" * 200,  # its header, then garbage
        damaged,  # pages zeroed
        foreign(index, 99, table),  # another version
        foreign(index, 3, "CREATE TABLE other (x)"),  # its version, another layout
        foreign(index, 3, table, "INSERT INTO certs VALUES ('c0', 'x'), ('c1', '[1]')"),
    ]
    for garbage in cases:
        index.write_bytes(garbage)
        assert rows(cfg) == expected
        api.renew(cfg, issuer=issuer)  # rebuilt (a no-op run, the files read)
        assert indexed(index) == {"c0", "c1"}
        assert rows(cfg) == expected


def test_a_planted_link_is_never_followed(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 1)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    index = tmp_path / "state" / INDEX_FILE
    index.unlink()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    index.symlink_to(target)
    expected = rows(cfg)
    api.renew(cfg, issuer=issuer)
    assert target.read_bytes() == b"precious"
    assert not index.is_symlink() and indexed(index) == {"c0"}
    assert stat.S_IMODE(index.stat().st_mode) == 0o600
    assert rows(cfg) == expected


def test_a_run_that_changes_one_certificate_rewrites_one_row_and_drops_the_unconfigured(
    tmp_path: Path,
) -> None:
    cfg = fleet(tmp_path, 3)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, issuer=issuer)
    index = tmp_path / "state" / INDEX_FILE
    before = texts(index)
    api.renew(cfg, ["c1"], force=True, issuer=issuer)
    after = texts(index)
    assert after["c0"] == before["c0"] and after["c2"] == before["c2"]
    assert after["c1"] != before["c1"]
    fewer = fleet(tmp_path, 2)  # c2 no longer configured
    api.renew(fewer, issuer=issuer)
    assert indexed(index) == {"c0", "c1"}


def test_an_index_of_an_earlier_version_is_removed_when_this_one_is_written(
    tmp_path: Path,
) -> None:
    cfg = fleet(tmp_path, 1)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    old = tmp_path / "state" / "index.json"
    old.write_text('{"version": 2, "certificates": {}}')
    (tmp_path / "state" / INDEX_FILE).unlink()
    api.renew(cfg, issuer=issuer)
    assert not old.exists() and indexed(tmp_path / "state" / INDEX_FILE) == {"c0"}


def test_a_changed_state_file_is_read_not_the_index(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 1)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, issuer=issuer)
    state = tmp_path / "state" / "certs" / "c0" / "state.json"
    state.write_text("{not json")
    (row,) = api.status(cfg)
    assert "moved aside and rebuilt" in row.reason


def test_the_writer_writes_as_it_goes_and_a_reader_keeps_nothing(tmp_path: Path) -> None:
    from certagent.index import Index

    (tmp_path / "s").mkdir()
    writer = Index(tmp_path / "s")
    writer.FLUSH = 4
    writer.write(0o640)
    for i in range(10):
        writer.read_state(f"c{i}", [1, 2, 3, i], {"last_outcome": "renewed"})
    assert len(indexed(tmp_path / "s" / INDEX_FILE)) == 8  # two batches of four so far
    writer.save([f"c{i}" for i in range(9)])  # c9 is no longer configured
    assert indexed(tmp_path / "s" / INDEX_FILE) == {f"c{i}" for i in range(9)}
    assert stat.S_IMODE((tmp_path / "s" / INDEX_FILE).stat().st_mode) == 0o640
    reader = Index(tmp_path / "s")
    assert reader.state("c3", str(tmp_path / "nowhere")) == (None, None)
    reader.read_state("c3", [9, 9, 9, 9], {"last_outcome": "failed"})
    reader.save(["c3"])  # a reader writes nothing, drops nothing
    assert len(indexed(tmp_path / "s" / INDEX_FILE)) == 9


def test_a_release_is_recorded_as_matched_when_written(tmp_path: Path) -> None:
    """The first no-op after an issuance hashes nothing: the files were just written
    with the digests its meta.json records."""
    import json

    from certagent.store import Store

    cfg = fleet(tmp_path, 2)
    api.renew(cfg, issuer=LocalIssuer())
    entries = {n: json.loads(e) for n, e in texts(tmp_path / "state" / INDEX_FILE).items()}
    store = Store(tmp_path / "state")
    for name in ("c0", "c1"):
        current = store.current(name)
        assert current is not None
        assert entries[name]["verified"]["release"] == current.release_id
        assert len(entries[name]["verified"]["sigs"]) == len(current.digests)


def test_a_leftover_is_found_even_when_its_folder_was_last_found_clean(tmp_path: Path) -> None:
    """A no-op run looks into a certificate's folders only when either changed since it
    last found them clean (two stats instead of two folder reads); a leftover of a
    killed write changes its folder, whatever its mtime is set back to."""
    import datetime as dt
    import json

    from .conftest import OffsetClock

    cfg = fleet(tmp_path, 1)
    issuer = LocalIssuer()
    later = OffsetClock(dt.timedelta(hours=1))  # the folders' last change is long past
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, issuer=issuer, clock=later)
    (entry,) = [json.loads(e) for e in texts(tmp_path / "state" / INDEX_FILE).values()]
    assert len(entry["dirs"]) == 2  # found clean, and believed from now on
    releases = tmp_path / "state" / "certs" / "c0" / "releases"
    for planted in (releases / ".tmp-20260101T000000Z-dead", releases.parent / ".state.json.tmp99"):
        folder = planted.parent
        st = folder.stat()
        if planted.name.startswith(".tmp-"):
            planted.mkdir()
        else:
            planted.write_text("{")
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back: not ctime
        report = api.renew(cfg, issuer=issuer, clock=later)
        assert not planted.exists(), planted
        steps = [s.detail for s in report.results[0].steps if s.step == "repair"]
        assert steps and planted.name in steps[0]
