"""Unit: the metrics follow Prometheus' naming rules (what promlint checks): base
units (seconds, never days), counters end in _total, timestamps in
_timestamp_seconds, every family has HELP and TYPE, and the text parses."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from certagent import api, config, metrics
from certagent.model import Outcome

from .fakes import LocalIssuer, fleet_file, minimal_yaml


def test_metric_names_follow_the_prometheus_conventions(tmp_path: Path) -> None:
    cfg = config.parse(
        minimal_yaml(tmp_path),
        tmp_path / "c.yaml",
    )
    api.renew(cfg, issuer=LocalIssuer())
    text = metrics.render(cfg)
    families = list(text_string_to_metric_families(text))
    assert families
    for family in families:
        name = family.name
        assert re.fullmatch(r"certagent_[a-z_]+", name), name
        assert not re.search(r"_(days|hours|minutes|milliseconds|ms|percent)\b", name), name
        if family.type == "counter":
            assert f"{name}_total" in text, name  # the parser strips _total
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), name
        assert f"# HELP {name}" in text and f"# TYPE {name}" in text


def test_build_info_and_a_certificate_waiting_to_be_deployed(tmp_path: Path) -> None:
    from certagent import __version__

    cfg = config.parse(minimal_yaml(tmp_path), tmp_path / "c.yaml")
    api.renew(cfg, issuer=LocalIssuer())
    text = metrics.render(cfg)
    assert f'certagent_build_info{{version="{__version__}"}} 1' in text
    assert 'certagent_certificate_undeployed{certificate="www"} 0' in text


def test_the_text_made_a_piece_at_a_time_says_what_the_json_says(tmp_path: Path) -> None:
    """More samples in a family than are joined at once (1000): nothing lost or moved."""
    cfg = config.load(fleet_file(tmp_path, 200))  # 200 x 6 outcomes: 1200 samples in one family
    api.renew(cfg, issuer=LocalIssuer())
    text = metrics.render(cfg)
    parsed = {
        (f.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    as_json = {
        (m["name"].removesuffix("_total"), tuple(sorted(s["labels"].items())), float(s["value"]))
        for m in metrics.to_json(cfg)["metrics"]  # type: ignore[attr-defined]
        for s in m["samples"]
    }
    assert {(n.removesuffix("_total"), labels, v) for n, labels, v in parsed} == as_json
    outcome = [s for f in text_string_to_metric_families(text)
               if f.name == "certagent_certificate_last_outcome" for s in f.samples]  # fmt: skip
    assert len(outcome) == 200 * len(Outcome)
    assert text.count("# TYPE certagent_certificate_last_outcome ") == 1
    textfile = tmp_path / "metrics.prom"
    metrics.write(cfg, textfile)
    assert textfile.read_text() == text


def test_text_set_aside_in_the_scratch_file_comes_back_the_same(tmp_path: Path) -> None:
    """A large host's samples wait in an unnamed scratch file, not in memory: the text
    that comes back is the text kept in memory (as text and as JSON), and the file is
    gone once printed."""
    cfg = config.load(fleet_file(tmp_path, 200))  # 1200 samples in one family: 2 chunks
    api.renew(cfg, issuer=LocalIssuer())
    for as_json in (False, True):
        kept, spilled = metrics._Spill(), metrics._Spill()
        spilled.HELD = 0  # every chunk set aside
        held = ["".join(f.render()) for f in metrics.families(cfg, as_json, kept)]
        set_aside = metrics.families(cfg, as_json, spilled)
        assert any(isinstance(c, tuple) for f in set_aside for c in f.chunks)
        assert ["".join(f.render()) for f in set_aside] == held
        scratch = spilled._file
        spilled.close()
        assert scratch is not None and scratch.closed


def test_last_runs_come_from_their_own_small_file_built_once_from_the_history(
    tmp_path: Path,
) -> None:
    import json

    from certagent.store import Store

    cfg = config.load(fleet_file(tmp_path, 2))
    api.renew(cfg, issuer=LocalIssuer())
    state = tmp_path / "state"
    runs = json.loads((state / "last-runs.json").read_text())["runs"]
    assert set(runs) == {"renew"} and runs["renew"]["exit_status"] == 0
    # a state directory of an earlier version: no file; read from the history, and the
    # next run writes it with what the history said of the other commands
    history = state / "history.jsonl"
    history.write_text(history.read_text() + json.dumps(
        {"command": "rollback", "time": "2026-01-02T03:04:05+00:00", "exit_status": 2,
         "certificates": []}) + "\n")  # fmt: skip
    (state / "last-runs.json").unlink()
    assert Store(state).last_runs()["rollback"]["exit_status"] == 2
    assert 'certagent_last_run_exit_status{command="rollback"} 2' in metrics.render(cfg)
    api.renew(cfg, issuer=LocalIssuer())
    runs = json.loads((state / "last-runs.json").read_text())["runs"]
    assert set(runs) == {"renew", "rollback"}
    # damaged: what cannot be trusted is not said
    for damage in ("{", '{"version": 1, "runs": {"renew": {"time": "yesterday"}}}',
                   '{"version": 1, "runs": {"renew": {"time": null}}}'):  # fmt: skip
        (state / "last-runs.json").write_text(damage)
        text = metrics.render(cfg)
        assert "yesterday" not in text and "None" not in text
        if damage == "{":  # unreadable: the history itself is read
            assert 'certagent_last_run_exit_status{command="renew"} 0' in text


def test_a_reader_that_stops_reading_is_not_an_internal_error(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    cfg = fleet_file(tmp_path, 300)
    api.renew(config.load(cfg), issuer=LocalIssuer())
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    for command in ("metrics", "status"):
        argv = [sys.executable, "-m", "certagent", "-c", str(cfg), command]
        pipe = subprocess.PIPE
        writer = subprocess.Popen(argv, stdout=pipe, stderr=pipe, env=env)
        assert writer.stdout is not None and writer.stderr is not None
        reader = subprocess.run(["head", "-c", "10"], stdin=writer.stdout, capture_output=True,
                                check=True)  # fmt: skip
        writer.stdout.close()  # head is gone: the pipe has no reader left
        err = writer.stderr.read().decode()
        writer.wait(timeout=60)
        assert "internal error" not in err and "Traceback" not in err, err
        assert len(reader.stdout) == 10
        if command == "metrics":  # 300 certificates: more than a pipe holds
            assert writer.returncode == 141, err
        else:
            assert writer.returncode in (0, 141), err


def test_a_summary_that_cannot_be_updated_is_removed_not_left_stale(tmp_path: Path) -> None:
    import os

    from certagent.store import Store

    cfg = config.load(fleet_file(tmp_path, 1))
    api.renew(cfg, issuer=LocalIssuer())
    state = tmp_path / "state"
    assert (state / "last-runs.json").exists()
    blocker = state / f".last-runs.json.tmp{os.getpid()}"
    blocker.mkdir()  # the next atomic write of the summary fails
    (blocker / "x").write_text("")
    report = api.renew(cfg, issuer=LocalIssuer(), force=True)
    assert not (state / "last-runs.json").exists()  # not left saying the older run
    assert Store(state).last_runs()["renew"]["time"] == report.finished.isoformat(
        timespec="seconds"
    )


def test_the_json_made_a_family_at_a_time_is_the_document_laid_out_whole(
    tmp_path: Path,
) -> None:
    """`--json metrics` is streamed like the text: the bytes json.dumps(indent=2) gives
    for the whole document, a sample with no labels and a family past a thousand
    samples included, and the same samples as the text."""
    import io
    import json

    cfg = config.load(fleet_file(tmp_path, 200))
    api.renew(cfg, issuer=LocalIssuer())
    (tmp_path / "state" / metrics.CHECK_FILE).write_text(json.dumps(
        {"checked_at": "2026-12-05T00:00:00+00:00", "endpoints": [{"label": "a", "state": "OK",
         "host": "127.0.0.1", "port": 443, "current_release": True}]}))  # fmt: skip
    out = io.StringIO()
    metrics.emit_json(cfg, out.write)
    printed = out.getvalue()
    document = json.loads(printed)
    assert printed == json.dumps(document, indent=2) + "\n"
    by_name = {m["name"]: m for m in document["metrics"]}
    assert by_name["certagent_check_timestamp_seconds"]["samples"] == [
        {"labels": {}, "value": 1796428800.0}
    ]
    assert len(by_name["certagent_certificate_last_outcome"]["samples"]) == 200 * len(Outcome)
    text = {f.name for f in text_string_to_metric_families(metrics.render(cfg))}
    assert {n.removesuffix("_total") for n in by_name} == text
