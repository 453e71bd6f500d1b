"""Acceptance: operations against real parts: backup/restore with a real pebble,
metrics parsed by prometheus_client, notifications to a real local SMTP server
(aiosmtpd, STARTTLS and auth) and a real HTTP receiver, heartbeat, audit history."""

from __future__ import annotations

import email
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certagent.store import Store
from testbed import pki
from testbed.pebble import Pebble
from testbed.proc import Server, free_port, port_open
from testbed.receiver import Receiver

from .conftest import write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(fail_first=1).start()  # the first POST gets a 503: retries are real
    yield server
    server.stop()


class Smtp:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.root = pki.make_ca("smtp test root")
        self.root_file = pki.write(folder / "root.pem", self.root.pem())
        cert, key = pki.issue(self.root, ["mail.ops.test", "127.0.0.1"])  # we connect by IP
        self.port = free_port()
        (folder / "password").write_text("s3cret\n")
        argv = [sys.executable, "-m", "testbed.smtp", "--port", str(self.port)]
        argv += ["--cert", str(pki.write(folder / "c.pem", cert))]
        argv += ["--key", str(pki.write(folder / "k.pem", key, 0o600))]
        argv += ["--maildir", str(folder / "mail"), "--user", "certagent", "--password", "s3cret"]
        self.server = Server(argv, folder / "smtp.log", env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
        self.server.wait_until(port_open("127.0.0.1", self.port), what="SMTP")

    def messages(self) -> list[email.message.Message]:
        folder = self.folder / "mail"
        files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        return [email.message_from_bytes(p.read_bytes()) for p in files]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Smtp]:
    server = Smtp(tmp_path / "smtp")
    yield server
    server.server.stop()


def ops_config(tmp_path: Path, pebble: Pebble, names: list[str], extra: dict[str, Any]) -> Path:
    text = "".join(f"{k}: {json.dumps(v)}\n" for k, v in extra.items())
    return write_config(
        tmp_path,
        pebble,
        {"www": names},
        extra="  failure_backoff: 0\n" + text,  # under policy: then top-level keys
    )


def test_backup_delete_restore_status_identical_and_account_reused(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = write_config(tmp_path, pebble)
    assert run("-c", str(path), "renew").code == 0
    before = run("-c", str(path), "--json", "status").out
    account = next((tmp_path / "state" / "accounts").glob("*/account.json")).read_bytes()
    archive = tmp_path / "backup" / "certagent.tgz"
    archive.parent.mkdir()
    result = run("-c", str(path), "backup", str(archive))
    assert result.code == 0, result.err
    assert archive.stat().st_mode & 0o777 == 0o600  # it holds private keys

    shutil.rmtree(tmp_path / "state")
    result = run("-c", str(path), "restore", str(archive))
    assert result.code == 0, result.err
    assert "restored" in result.out
    assert run("-c", str(path), "--json", "status").out == before
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    key = next((tmp_path / "state" / "certs" / "www" / "releases").glob("*/privkey.pem"))
    assert key.stat().st_mode & 0o777 == 0o600

    result = run("-c", str(path), "-v", "renew", "--force")
    assert result.code == 0, result.err
    assert "registered ACME account" not in result.err  # the restored account is reused
    assert next((tmp_path / "state" / "accounts").glob("*/account.json")).read_bytes() == account

    # Restoring over existing state needs --force, and then moves it aside.
    result = run("-c", str(path), "restore", str(archive))
    assert result.code == 64 and "refusing to overwrite" in result.err
    assert run("-c", str(path), "restore", "--force", str(archive)).code == 0
    kept = list(tmp_path.glob("state.before-restore-*"))
    assert len(kept) == 1 and (kept[0] / "history.jsonl").is_file()
    assert run("-c", str(path), "--json", "status").out == before


def test_restore_rejects_what_is_not_a_backup(tmp_path: Path, run) -> None:
    bogus = tmp_path / "x.tgz"
    bogus.write_bytes(b"not a tarball")
    result = run("restore", str(bogus))
    assert result.code == 64 and "not a readable certagent backup" in result.err


def test_metrics_textfile_parses_and_matches_the_store(tmp_path: Path, pebble: Pebble, run) -> None:
    textfile = tmp_path / "textfile" / "certagent.prom"
    textfile.parent.mkdir()
    path = ops_config(
        tmp_path, pebble, ["www.example.test"], {"metrics": {"textfile": str(textfile)}}
    )
    assert run("-c", str(path), "renew").code == 0
    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text())}
    current = Store(tmp_path / "state").current("www")
    assert current is not None

    def value(name: str, **labels: str) -> float:
        for s in families[name].samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"{name} {labels} not in {families[name].samples}")

    assert value("certagent_certificate_not_after_timestamp_seconds", certificate="www") == round(
        current.not_after.timestamp(), 3
    )
    assert value("certagent_certificate_attempts", certificate="www") == 1  # _total dropped
    assert value("certagent_certificate_failures", certificate="www") == 0
    assert value("certagent_certificate_last_outcome", certificate="www", outcome="renewed") == 1
    assert value("certagent_certificate_last_outcome", certificate="www", outcome="broken") == 0
    assert value("certagent_last_run_exit_status", command="renew") == 0
    assert families["certagent_certificate_attempts"].type == "counter"
    # `certagent metrics` prints the same families
    printed = run("-c", str(path), "metrics").out
    assert {f.name for f in text_string_to_metric_families(printed)} == set(families)


def test_failure_is_notified_once_and_its_resolution_too(
    tmp_path: Path, pebble: Pebble, receiver: Receiver, smtp: Smtp, run
) -> None:
    notify = {
        "expiry_days": 0,
        "webhook": {"url": f"{receiver.url}/hook", "backoff": "50ms", "retries": 3},
        "email": {
            "host": "127.0.0.1",
            "port": smtp.port,
            "from": "certagent@ops.test",
            "to": ["oncall@ops.test"],
            "username": "certagent",
            "password_file": str(smtp.folder / "password"),
            "trust_roots": [str(smtp.root_file)],
        },
    }
    # The CA refuses this name (pebble's blocklist): the order fails every run.
    path = ops_config(tmp_path, pebble, ["www.blocked.test"], {"notify": notify})
    assert run("-c", str(path), "renew").code == 1
    assert run("-c", str(path), "renew").code == 1  # the same problem: not sent again
    hooks = receiver.bodies("/hook")
    assert [(b["event"], b["problem"], b["certificate"]) for b in hooks] == [
        ("problem", "failed", "www")
    ]
    assert receiver.failed == 1  # the first attempt got a 503 and was retried
    assert "blocked" in hooks[0]["message"]
    mails = smtp.messages()
    assert len(mails) == 1
    assert mails[0]["Subject"].startswith("[certagent] PROBLEM www: failed")

    # Fixed: the next run renews, and the resolution is sent once.
    path = ops_config(tmp_path, pebble, ["www.example.test"], {"notify": notify})
    assert run("-c", str(path), "renew").code == 0
    assert run("-c", str(path), "renew").code == 0
    assert [b["event"] for b in receiver.bodies("/hook")] == ["problem", "resolved"]
    assert [m["Subject"].split(" ")[1] for m in smtp.messages()] == ["PROBLEM", "RESOLVED"]


def test_nearing_expiry_is_notified_once(
    tmp_path: Path, pebble: Pebble, receiver: Receiver, run
) -> None:
    notify = {"expiry_days": 3650, "webhook": {"url": f"{receiver.url}/hook", "backoff": 0}}
    path = ops_config(tmp_path, pebble, ["www.example.test"], {"notify": notify})
    assert run("-c", str(path), "renew").code == 0
    state = tmp_path / "state" / "notify-state.json"
    written = state.stat().st_mtime_ns
    assert run("-c", str(path), "renew").code == 0
    hooks = receiver.bodies("/hook")
    assert [(b["event"], b["problem"]) for b in hooks] == [("problem", "expiring")]
    assert state.stat().st_mtime_ns == written  # nothing new: the state file is not rewritten


def test_heartbeat_after_every_completed_run_and_the_audit_history(
    tmp_path: Path, pebble: Pebble, receiver: Receiver, run
) -> None:
    receiver.fail_first = 0
    path = ops_config(
        tmp_path, pebble, ["www.example.test"], {"heartbeat": {"url": f"{receiver.url}/ping"}}
    )
    assert run("-c", str(path), "renew").code == 0
    assert run("-c", str(path), "renew").code == 0  # nothing due, still a completed run
    pings = receiver.bodies("/ping")
    assert [p["exit_status"] for p in pings] == [0, 0]
    assert all(p["command"] == "renew" for p in pings)

    result = run("-c", str(path), "--json", "history", "www")
    runs = json.loads(result.out)["runs"]
    assert len(runs) == 2 and runs[0]["time"] >= runs[1]["time"]  # newest first
    first = runs[1]["certificates"][0]
    assert first["outcome"] == "renewed"
    assert [s["step"] for s in first["steps"]] == ["precheck", "order", "stage", "commit"]
    assert first["files_changed"] == [str(tmp_path / "state" / "certs" / "www" / "current")]
    assert runs[1]["user"] and runs[1]["uid"] >= 0
    text = run("-c", str(path), "history").out
    assert "renew" in text and "www: renewed" in text


def test_splay_waits_then_runs(tmp_path: Path, pebble: Pebble, run) -> None:
    path = write_config(tmp_path, pebble)
    assert run("-c", str(path), "renew", "--splay", "0.05").code == 0


def test_backup_to_a_missing_directory_is_a_clear_error(
    tmp_path: Path, pebble: Pebble, run
) -> None:
    path = write_config(tmp_path, pebble)
    result = run("-c", str(path), "backup", str(tmp_path / "nowhere" / "b.tgz"))
    assert result.code == 1
    assert "cannot write the backup" in result.err and "nowhere" in result.err
    assert "internal error" not in result.err
