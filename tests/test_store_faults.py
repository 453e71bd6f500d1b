"""Unit: one damaged certificate never stops the others, and the store repairs itself
(issue #12). Corrupt state files, a deleted `current` link, damaged keys, a full disk
and a bug in one certificate's run, with the fake issuer behind the Issuer port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from certagent import api, config
from certagent.model import Config, Outcome, Report
from certagent.store import Store

from .fakes import LocalIssuer


def _names(csr_pem: bytes) -> list[str]:
    from cryptography import x509

    csr = x509.load_pem_x509_csr(csr_pem)
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


def two_certs(tmp_path: Path, state_dir: Path | None = None) -> Config:
    (tmp_path / "webroot").mkdir(exist_ok=True)
    text = textwrap.dedent(f"""\
        state_dir: {state_dir or tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        certificates:
          aaa:
            names: [aaa.example.test]
            challenge: {{type: http-01, webroot: {tmp_path / "webroot"}}}
          bbb:
            names: [bbb.example.test]
            challenge: {{type: http-01, webroot: {tmp_path / "webroot"}}}
        """)
    return config.parse(text, tmp_path / "certagent.yaml")


CORRUPTIONS = {
    "empty": b"",
    "truncated": b'{"last_outcome": "renewed", "consec',
    "garbage": b"\x00\xff\xfe garbage",
    "list": b"[1, 2, 3]",
    "wrong types": json.dumps({"consecutive_failures": "many", "pending": 7}).encode(),
    "naive time": json.dumps({"last_attempt": "2026-01-01T00:00:00"}).encode(),
    "huge count": json.dumps({"consecutive_failures": 10**30}).encode(),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_state_file_is_moved_aside_and_the_run_goes_on(tmp_path: Path, kind: str) -> None:
    cfg = two_certs(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    state_file = cfg.state_dir / "certs" / "aaa" / "state.json"
    state_file.write_bytes(CORRUPTIONS[kind])

    for row in api.status(cfg):  # plan and status say it, and agree with renew
        assert not row.due
    plan = api.plan_run(cfg)
    assert "moved aside" in plan.results[0].decision.reason

    report = api.renew(cfg, ["aaa", "bbb"], force=True, issuer=issuer)
    assert [r.outcome for r in report.results] == [Outcome.RENEWED, Outcome.RENEWED]
    repair = [s for s in report.results[0].steps if s.step == "repair"]
    assert repair and "moved the unreadable state.json aside" in repair[0].detail
    aside = list(state_file.parent.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == CORRUPTIONS[kind]  # kept, not deleted
    Store(cfg.state_dir).read_state("aaa")  # readable again


def test_corrupt_release_metadata_is_skipped_not_fatal(tmp_path: Path) -> None:
    cfg = two_certs(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, ["aaa"], force=True, issuer=issuer)
    store = Store(cfg.state_dir)
    old = store.releases("aaa")[0]
    (old.path / "meta.json").write_text("{not json")
    assert [r.release_id for r in store.releases("aaa")] != [old.release_id]
    report = api.renew(cfg, force=True, issuer=issuer)
    assert all(r.outcome is Outcome.RENEWED for r in report.results)


def test_deleted_current_link_is_repaired_without_an_order(tmp_path: Path) -> None:
    cfg = two_certs(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    store = Store(cfg.state_dir)
    live = store.current("aaa")
    assert live is not None
    store.current_link("aaa").unlink()

    rows = {r.name: r for r in api.status(cfg)}
    assert rows["aaa"].release == live.release_id and not rows["aaa"].due
    assert "current will point at the newest healthy release" in rows["aaa"].reason

    orders = issuer.orders
    report = api.renew(cfg, issuer=issuer)
    assert issuer.orders == orders  # no issuance spent on a missing link
    assert report.results[0].outcome is Outcome.SKIPPED
    assert any(s.step == "repair" for s in report.results[0].steps)
    again = store.current("aaa")
    assert again is not None and again.release_id == live.release_id


def test_dangling_current_link_points_at_the_newest_healthy_release(tmp_path: Path) -> None:
    cfg = two_certs(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    api.renew(cfg, ["aaa"], force=True, issuer=issuer)
    store = Store(cfg.state_dir)
    first, second = store.releases("aaa")
    shutil.rmtree(second.path)  # the live release is gone
    report = api.renew(cfg, issuer=issuer)
    assert report.results[0].outcome is Outcome.SKIPPED
    now = store.current("aaa")
    assert now is not None and now.release_id == first.release_id


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_live_key_is_noticed_and_renewed(tmp_path: Path, damage: str) -> None:
    cfg = two_certs(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    store = Store(cfg.state_dir)
    live = store.current("aaa")
    assert live is not None
    key = live.path / "privkey.pem"
    data = key.read_bytes()
    if damage == "truncate":
        key.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        key.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    else:
        key.unlink()

    rows = {r.name: r for r in api.status(cfg)}
    assert rows["aaa"].due and "damaged" in rows["aaa"].reason
    assert not rows["bbb"].due
    plan = {r.name: r for r in api.plan_run(cfg).results}
    assert plan["aaa"].decision.due and not plan["bbb"].decision.due

    report = api.renew(cfg, issuer=issuer)
    assert [r.outcome for r in report.results] == [Outcome.RENEWED, Outcome.SKIPPED]
    fresh = store.current("aaa")
    assert fresh is not None and store.damage(fresh) is None


def test_a_bug_in_one_certificate_does_not_stop_the_others(tmp_path: Path) -> None:
    cfg = two_certs(tmp_path)

    class Buggy(LocalIssuer):
        def issue(self, csr_pem: bytes, solver: object, options: object = None) -> bytes:  # type: ignore[override]
            if _names(csr_pem) == ["aaa.example.test"]:  # whichever order comes first
                self.orders += 1
                raise RuntimeError("a bug in an adapter")
            return super().issue(csr_pem, solver, options)  # type: ignore[arg-type]

    report = api.renew(cfg, issuer=Buggy())
    first, second = report.results
    assert first.outcome is Outcome.FAILED_BEFORE_SWAP
    assert first.error_code == "internal-error" and "a bug in an adapter" in (first.error or "")
    assert second.outcome is Outcome.RENEWED
    assert api.exit_status(report) == 1
    record = Store(cfg.state_dir).last_record("renew")
    assert record is not None and record["exit_status"] == 1
    assert Store(cfg.state_dir).read_state("aaa").consecutive_failures == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_full_disk_is_refused_before_ordering_and_leaves_nothing_half_written(
    tmp_path: Path,
) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], check=True)
    try:
        cfg = two_certs(tmp_path, state_dir=mnt / "state")
        issuer = LocalIssuer()
        assert api.exit_status(api.renew(cfg, issuer=issuer)) == 0
        filler = mnt / "filler"
        with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
        orders = issuer.orders
        report = api.renew(cfg, force=True, issuer=issuer)
        assert issuer.orders == orders  # not one issuance spent on a full disk
        for r in report.results:
            assert r.outcome is Outcome.FAILED_BEFORE_SWAP
            assert "free" in (r.error or "") or "cannot write" in (r.error or "")
        leftovers = [p for p in (mnt / "state").rglob("*") if ".tmp" in p.name]
        assert not leftovers
        filler.unlink()
        report = api.renew(cfg, force=True, issuer=issuer)
        assert all(r.outcome is Outcome.RENEWED for r in report.results)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_renewal_information_is_asked_again_only_later(tmp_path: Path) -> None:
    """Issue #16: a no-op run asks the CA nothing before ari_next; a CA that could not
    be asked is asked again an hour later, not on every run."""
    from certagent.errors import CAUnreachable

    cfg = two_certs(tmp_path)

    class Counting(LocalIssuer):
        calls = 0
        down = False

        def renewal_window(self, cert_pem: bytes):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            if Counting.down:
                raise CAUnreachable(self.label, "connection refused")
            return None

    issuer = Counting()
    api.renew(cfg, issuer=issuer)  # issues both: nothing to ask yet
    api.renew(cfg, issuer=issuer)  # asks once per certificate: no ARI here
    asked = Counting.calls
    assert asked == 2
    api.renew(cfg, issuer=issuer)
    assert Counting.calls == asked  # a day before asking again
    state = Store(cfg.state_dir).read_state("aaa")
    assert state.ari_next is not None
    Counting.down = True
    for name in ("aaa", "bbb"):  # pretend the day has passed
        store = Store(cfg.state_dir)
        store.write_state(name, replace(store.read_state(name), ari_next=None))
    report = api.renew(cfg, issuer=issuer)
    assert all(r.outcome is Outcome.SKIPPED for r in report.results)
    after_down = Counting.calls
    api.renew(cfg, issuer=issuer)
    assert Counting.calls == after_down  # not again within the hour


def test_a_fifo_in_place_of_a_state_file_is_moved_aside_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer for ever: the store reads its
    files without waiting (read_plain), says the file is unreadable and the run goes on."""
    import os
    import threading

    cfg = two_certs(tmp_path)
    issuer = LocalIssuer()
    api.renew(cfg, issuer=issuer)
    state_file = cfg.state_dir / "certs" / "aaa" / "state.json"
    state_file.unlink()
    os.mkfifo(state_file)
    done: list[object] = []
    worker = threading.Thread(
        target=lambda: done.append(api.renew(cfg, ["aaa"], force=True, issuer=issuer)),
        daemon=True,
    )
    worker.start()
    worker.join(60)  # a hang is a failure, not a stuck suite
    assert done, "renew waited on the FIFO"
    report = done[0]
    assert isinstance(report, Report) and report.results[0].outcome is Outcome.RENEWED
    assert list(state_file.parent.glob("state.json.corrupt-*"))
    Store(cfg.state_dir).read_state("aaa")  # a plain file again
