"""Unit: the index (issue #16) spares no-op runs, `plan` and `status` the reading and
hashing of every certificate's files, and is never trusted over them: a changed key is
found however its times are set back, a corrupt or foreign index is ignored, a changed
state file is read, and what status says is the same with or without the index."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from certagent import api, config
from certagent.index import INDEX_FILE
from certagent.model import Config

from .fakes import LocalIssuer


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
    assert set(json.loads(index.read_text())["certificates"]) == {"c0", "c1", "c2"}
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
    for garbage in (b"\0\xff{", b"[]", json.dumps({"version": 99}).encode(),
                    json.dumps({"version": 1, "certificates": {"c0": "x"}}).encode()):  # fmt: skip
        index.write_bytes(garbage)
        assert rows(cfg) == expected
    api.renew(cfg, issuer=issuer)
    assert set(json.loads(index.read_text())["certificates"]) == {"c0", "c1"}


def test_a_changed_state_file_is_read_not_the_index(tmp_path: Path) -> None:
    cfg = fleet(tmp_path, 1)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, issuer=issuer)
    state = tmp_path / "state" / "certs" / "c0" / "state.json"
    state.write_text("{not json")
    (row,) = api.status(cfg)
    assert "moved aside and rebuilt" in row.reason
