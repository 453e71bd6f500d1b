"""Unit: the release store, the atomic flip, crash recovery and the lock."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from certagent import api, config
from certagent.errors import LockHeld
from certagent.model import Config
from certagent.store import Store

from .fakes import LocalIssuer

ROOT = Path(__file__).resolve().parent.parent


def local_config(tmp_path: Path, keep: int = 5) -> Config:
    (tmp_path / "webroot").mkdir(exist_ok=True)
    text = textwrap.dedent(f"""\
        state_dir: {tmp_path / "state"}
        ca: {{directory: https://ca.invalid/dir}}
        policy: {{keep_releases: {keep}}}
        certificates:
          www:
            names: [www.example.test]
            challenge: {{type: http-01, webroot: {tmp_path / "webroot"}}}
        """)
    return config.parse(text, tmp_path / "certagent.yaml")


def test_release_files_and_modes(tmp_path: Path) -> None:
    cfg = local_config(tmp_path)
    report = api.renew(cfg, issuer=LocalIssuer())
    assert report.results[0].outcome.value == "renewed"
    current = Store(cfg.state_dir).current("www")
    assert current is not None
    for name in ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem", "meta.json"):
        assert (current.path / name).is_file()
    assert stat.S_IMODE((current.path / "privkey.pem").stat().st_mode) == 0o600
    link = cfg.state_dir / "certs" / "www" / "current"
    assert os.readlink(link) == f"releases/{current.release_id}"  # relative: survives a move


def test_release_records_its_ca(tmp_path: Path) -> None:
    cfg = local_config(tmp_path)
    api.renew(cfg, issuer=LocalIssuer())
    current = Store(cfg.state_dir).current("www")
    assert current is not None and current.ca == LocalIssuer.label


def test_keeps_last_n_releases_never_the_current(tmp_path: Path) -> None:
    cfg = local_config(tmp_path, keep=2)
    issuer = LocalIssuer()
    for _ in range(4):
        api.renew(cfg, force=True, issuer=issuer)
    store = Store(cfg.state_dir)
    releases = store.releases("www")
    assert len(releases) == 2
    current = store.current("www")
    assert current is not None and current.release_id == releases[-1].release_id


def test_death_between_writing_and_flipping(tmp_path: Path) -> None:
    """SIGKILL after a release is written and another half-written: the old one stays current."""
    cfg = local_config(tmp_path)
    api.renew(cfg, issuer=LocalIssuer())
    store = Store(cfg.state_dir)
    before = store.current("www")
    assert before is not None

    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from certagent.store import Store
        store = Store(Path({str(cfg.state_dir)!r}))
        with store.lock():
            files = {{n: b"x" for n in ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem")}}
            store.write_release("www", files, {{"names": []}}, "29990101T000000000000Z-complete")
            tmp = store.cert_dir("www") / "releases" / ".tmp-29990101T000000000001Z-partial"
            tmp.mkdir()
            (tmp / "privkey.pem").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """)
    proc = subprocess.run(
        [sys.executable, "-c", child],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    after = store.current("www")
    assert after is not None and after.release_id == before.release_id
    assert (store.cert_dir("www") / "releases" / ".tmp-29990101T000000000001Z-partial").exists()

    # The kernel released the dead run's lock; the next run cleans up and carries on.
    report = api.renew(cfg, issuer=LocalIssuer())
    assert report.results[0].outcome.value == "skipped"
    assert not list((store.cert_dir("www") / "releases").glob(".tmp-*"))
    assert store.current("www").release_id == before.release_id  # type: ignore[union-attr]


def test_lock_is_exclusive(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with store.lock(), pytest.raises(LockHeld), store.lock():
        pass
    with store.lock():  # released again
        pass


def test_failed_order_keeps_current_and_counts(tmp_path: Path) -> None:
    cfg = local_config(tmp_path)
    api.renew(cfg, issuer=LocalIssuer())
    before = Store(cfg.state_dir).current("www")

    class Refusing(LocalIssuer):
        def issue(self, csr_pem: bytes, solver: object, options: object = None) -> bytes:  # type: ignore[override]
            from certagent.errors import OrderFailed

            raise OrderFailed(
                self.label, "refused: urn:ietf:params:acme:error:rateLimited: slow down"
            )

    report = api.renew(cfg, force=True, issuer=Refusing())
    result = report.results[0]
    assert result.outcome.value == "failed_before_swap"
    assert "rateLimited" in (result.error or "")
    assert [s.step for s in result.steps] == ["precheck", "order"]
    assert api.exit_status(report) == 1
    assert Store(cfg.state_dir).current("www") == before
    assert Store(cfg.state_dir).read_state("www").consecutive_failures == 1


def test_stage_rejects_a_certificate_for_other_names(tmp_path: Path) -> None:
    cfg = local_config(tmp_path)

    class WrongNames(LocalIssuer):
        def issue(self, csr_pem: bytes, solver: object, options: object = None) -> bytes:  # type: ignore[override]
            from testbed import pki

            cert, _key = pki.issue(self.ca, ["other.example.test"])
            return cert

    result = api.renew(cfg, issuer=WrongNames()).results[0]
    assert result.outcome.value == "failed_before_swap"
    assert "does not match our key" in (result.error or "")
    assert Store(cfg.state_dir).current("www") is None


def test_status_and_plan_read_only(tmp_path: Path) -> None:
    cfg = local_config(tmp_path)
    rows = api.status(cfg)
    assert rows[0].release is None and rows[0].due
    assert not cfg.state_dir.exists()  # status and plan create nothing
    api.plan_run(cfg)
    assert not cfg.state_dir.exists()


def test_history_is_read_backwards_across_chunk_boundaries(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with store.lock():  # makes the state directory, as every run does
        pass
    for i in range(50):
        store.append_history(
            {"command": "renew" if i % 7 == 0 else "deploy", "i": i, "pad": "x" * i}
        )
    with (tmp_path / "state" / "history.jsonl").open("a") as f:
        f.write('{"torn": ')  # a crash mid-append leaves a partial last line
    got = [r["i"] for r in store.history_backwards(chunk=64)]
    assert got == list(range(49, -1, -1))
    record = store.last_record("renew")
    assert record is not None and record["i"] == 49
