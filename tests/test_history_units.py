"""Unit: the audit log at scale (issue #28). It does not grow without end (moved to a
second generation at its size limit, read on through it), and `history` prints a run
at a time: many quiet certificates as one line unless asked, and `--json` the same
bytes as the whole document laid out by json.dumps."""

from __future__ import annotations

import json
import os
from pathlib import Path

from certagent import api, config, metrics
from certagent.store.history import History

from .fakes import LocalIssuer, fleet_file


def record(i: int, certificates: int = 3) -> dict[str, object]:
    return {"command": "renew", "time": f"2026-12-05T00:00:{i % 60:02d}+00:00",
            "exit_status": 0, "run": i,
            "certificates": [{"name": f"c{n}", "outcome": "skipped", "reason": "not due"}
                             for n in range(certificates)]}  # fmt: skip


def test_the_log_moves_to_a_second_generation_at_its_limit_and_is_read_through_it(
    tmp_path: Path,
) -> None:
    log = History(tmp_path, max_bytes=2000)
    for i in range(40):
        log.append(record(i))
    older = tmp_path / "history.jsonl.1"
    assert older.exists()
    assert os.path.getsize(tmp_path / "history.jsonl") < 2000 + 400
    assert os.path.getsize(older) < 2000 + 400  # the one before it is gone: bounded
    runs = [r["run"] for r in log.backwards()]
    assert runs == sorted(runs, reverse=True) and runs[0] == 39  # newest first, no gap
    assert runs == list(range(39, 39 - len(runs), -1)) and len(runs) > 10
    # killed between the move and the next append: every record is still read
    os.replace(tmp_path / "history.jsonl", older)
    assert next(r["run"] for r in log.backwards()) == 39
    log.append(record(40))
    assert [r["run"] for r in log.backwards()][:2] == [40, 39]


def test_history_says_many_quiet_certificates_in_one_line_and_streams_its_json(
    tmp_path: Path, run
) -> None:
    path = fleet_file(tmp_path, 30)
    cfg = config.load(path)
    api.renew(cfg, issuer=LocalIssuer())  # 30 renewed
    api.renew(cfg, issuer=LocalIssuer())  # 30 not due
    text = run("-c", str(path), "history").out
    newest, first = text.split("\n  ... and 20 more skipped with nothing to say")
    assert newest.count(": skipped: ") == 10
    assert "c29: renewed" in first  # what was done is said whole
    assert run("-c", str(path), "-v", "history", "-n", "1").out.count(": skipped: ") == 30
    named = run("-c", str(path), "history", "c25").out
    assert "c25: skipped" in named and "c25: renewed" in named and "c24" not in named

    printed = run("-c", str(path), "--json", "history").out
    document = json.loads(printed)
    assert printed == json.dumps(document, indent=2) + "\n"
    assert [len(r["certificates"]) for r in document["runs"]] == [30, 30]
    assert document["runs"] == api.history(cfg)
    (tmp_path / "new").mkdir()
    empty = run("-c", str(fleet_file(tmp_path / "new", 1)), "--json", "history").out  # no run yet
    assert empty == json.dumps({"schema": 1, "runs": []}, indent=2) + "\n"


def test_a_damaged_or_foreign_history_is_printed_as_far_as_it_goes(tmp_path: Path, run) -> None:
    """Lines of the wrong shape (a hand edit, another version, a torn write) are no
    internal error in either form."""
    path = fleet_file(tmp_path, 1)
    api.renew(config.load(path), issuer=LocalIssuer())
    odd = [{}, {"command": None, "time": 5}, {"command": ["x"], "certificates": "all"},
           {"command": "renew", "certificates": [1, None, {"name": 3, "files_changed": 7,
            "overrides": {"a": 1}}, {"name": "c0", "outcome": "skipped", "reason": None}]},
           [1, 2], "text", 3.5]  # fmt: skip
    history = tmp_path / "state" / "history.jsonl"
    with history.open("a") as f:
        f.write("".join(json.dumps(o) + "\n" for o in odd) + '{"torn": \n' + "NaN\n")
    for args in (("history",), ("-v", "history"), ("--json", "history"), ("history", "c0")):
        result = run("-c", str(path), *args)
        assert result.code == 0 and "internal error" not in result.err, (args, result.err)
    printed = run("-c", str(path), "--json", "history").out
    assert printed == json.dumps(json.loads(printed), indent=2) + "\n"


def test_an_older_generation_that_cannot_be_read_fails_no_run(tmp_path: Path, run) -> None:
    """A folder or a link where history.jsonl.1 should be (or where the log itself
    should be): the run's exit status is its own, the older records are left out with a
    warning, and what can be read is still said."""
    path = fleet_file(tmp_path, 1)
    cfg = config.load(path)
    api.renew(cfg, issuer=LocalIssuer())
    state = tmp_path / "state"
    for planted in ("folder", "link"):
        older = state / "history.jsonl.1"
        if planted == "folder":
            older.mkdir()
        else:
            older.rmdir()
            older.symlink_to("/etc/passwd")
        (state / "last-runs.json").unlink()  # rebuilt from the history by the next append
        result = run("-c", str(path), "renew")
        assert result.code == 0, result
        shown = run("-c", str(path), "history")
        assert shown.code == 0 and "c0: renewed" in shown.out, shown
        assert "the older records are left out" in shown.err
        assert 'certagent_last_run_exit_status{command="renew"} 0' in metrics.render(cfg)
    (state / "history.jsonl.1").unlink()
    log = state / "history.jsonl"
    log.rename(state / "saved")
    log.mkdir()  # the log itself: the run still ends as it did, the append's error said
    result = run("-c", str(path), "renew")
    assert result.code == 0 and "cannot append" in result.err, result
    assert "certagent_build_info" in metrics.render(cfg)


def test_json_history_that_cannot_start_prints_one_error_document(tmp_path: Path, run) -> None:
    """An unknown NAME or a log that cannot be read is found before anything is
    printed: stdout holds one JSON document (the error), never a started one."""
    path = fleet_file(tmp_path, 1)
    api.renew(config.load(path), issuer=LocalIssuer())
    unknown = run("-c", str(path), "--json", "history", "nosuch")
    assert unknown.code == 64 and json.loads(unknown.out)["error_code"] == "usage", unknown
    log = tmp_path / "state" / "history.jsonl"
    log.unlink()
    log.mkdir()
    broken = run("-c", str(path), "--json", "history")
    assert broken.code != 0 and "history.jsonl" in json.loads(broken.out)["error"], broken


def test_a_large_record_is_walked_as_text_and_says_the_same(tmp_path: Path, run) -> None:
    """A record past LAZY_BYTES keeps its certificates as text, decoded as they are
    walked: the same lines, the same --json bytes, NAME found in it; a damaged one is
    left out like any damaged line."""
    from certagent.jsontext import Items, lazy_object
    from certagent.store.history import LAZY_BYTES

    path = fleet_file(tmp_path, 3)
    cfg = config.load(path)
    big = record(1, 5000)
    big["certificates"][1500] = {"name": "c2", "outcome": "renewed", "reason": "due",  # type: ignore[index]
                                 "steps": [{"step": "order", "ok": True, "detail": "x " * 40}],
                                 "files_changed": ["/etc/x.pem"], "overrides": []}  # fmt: skip
    assert len(json.dumps(big)) > LAZY_BYTES
    log = History(cfg.state_dir)
    cfg.state_dir.mkdir(mode=0o700, exist_ok=True)
    log.append(record(0, 2))
    log.append(big)
    with (cfg.state_dir / "history.jsonl").open("a") as f:  # a damaged large line
        f.write(json.dumps(record(2, 5000))[: LAZY_BYTES + 100] + '", }, ]}\n')
    lazy = next(log.backwards(lazy=True))
    assert isinstance(lazy["certificates"], Items) and lazy["certificates"] == big["certificates"]
    assert lazy == big and lazy_object(json.dumps(big), "certificates") == big

    plain = api.history(cfg)  # plain lists for callers
    assert plain == [big, record(0, 2)] and isinstance(plain[0]["certificates"], list)
    printed = run("-c", str(path), "--json", "history").out
    assert printed == json.dumps({"schema": 1, "runs": plain}, indent=2) + "\n"
    text = run("-c", str(path), "-v", "history").out
    assert text.count(": skipped: ") == 4999 + 2 and "c2: renewed: due" in text
    assert "    changed /etc/x.pem" in text
    named = run("-c", str(path), "history", "c2").out
    assert "c2: renewed: due" in named and "c2: skipped" in named


def test_a_record_whose_certificates_come_one_at_a_time_is_the_same_line(tmp_path: Path) -> None:
    """The run's certificates are encoded as they come (a generator, let go entry by
    entry): the line is byte for byte what json.dumps of the whole record writes."""
    certs = [
        {"name": f"c{i}", "outcome": "renewed", "steps": [{"step": "order", "ok": True,
         "detail": "é \u2028 \"quoted\""}], "files": [], "z": None, "a": 1.5}
        for i in range(600)  # more than one batch
    ]  # fmt: skip
    record = {"time": "2026-12-05T00:00:00+00:00", "command": "renew", "exit_status": 0,
              "argv": ["renew"], "user": "root", "uid": 0, "pid": 1}  # fmt: skip
    whole, streamed = tmp_path / "whole", tmp_path / "streamed"
    whole.mkdir()
    streamed.mkdir()
    History(whole).append({**record, "certificates": certs})
    History(streamed).append({**record, "certificates": iter(certs)})
    line = (streamed / "history.jsonl").read_bytes()
    assert line == (whole / "history.jsonl").read_bytes()
    assert line == (json.dumps({**record, "certificates": certs}, sort_keys=True,
                               separators=(",", ":")) + "\n").encode()  # fmt: skip
