"""The state directory: releases, the `current` link, per-certificate state, history, lock.

Side effects: filesystem only. Layout under the state directory (0700):

    lock                               flock(2) target; one run at a time
    history.jsonl                      append-only, one JSON object per run
    accounts/<ca-id>/                  ACME account key (0600) and registration
    certs/<name>/releases/<id>/        immutable: privkey.pem (0600), cert.pem,
                                       chain.pem, fullchain.pem, meta.json
    certs/<name>/current -> releases/<id>   flipped with one os.replace
    certs/<name>/state.json            last outcome, failure streak, ARI window
    certs/<name>/rehearsal.json        (staging store) inputs of the last passing rehearsal

A release is written into `releases/.tmp-<id>`, every file fsynced, then renamed;
a crash leaves either no release or a complete one that is not current. The next
run removes `.tmp-*` leftovers under the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import LockHeld, StoreError
from .model import CertState, KeyType, Release, RenewalWindow

KEY_FILE = "privkey.pem"
BUNDLE_FILE = "bundle.pem"  # fullchain + key in one file, for haproxy and the like
SECRET_FILES = frozenset({KEY_FILE, BUNDLE_FILE})


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a whole file or nothing: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path) -> None:
    """Create path and any missing parents 0700 (mkdir's parents=True would use the umask)."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- lock -----------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the state directory's lock, or raise LockHeld at once."""
        self._ensure_root()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise LockHeld(f"another certagent run holds {self.root / 'lock'}") from exc
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    def _ensure_root(self) -> None:
        try:
            make_private_dir(self.root)
            self.root.chmod(0o700)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {self.root}: {exc.strerror}") from exc

    # -- releases -------------------------------------------------------------------

    def cert_dir(self, name: str) -> Path:
        return self.root / "certs" / name

    def current_link(self, name: str) -> Path:
        return self.cert_dir(name) / "current"

    def write_release(
        self, name: str, files: Mapping[str, bytes], meta: Mapping[str, Any], release_id: str
    ) -> Path:
        """Write a complete, immutable release; it is not current until `activate`."""
        releases = self.cert_dir(name) / "releases"
        make_private_dir(releases)
        final = releases / release_id
        tmp = releases / f".tmp-{release_id}"
        if final.exists():
            raise StoreError(f"release {final} already exists")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        for fname, data in files.items():
            target = tmp / fname
            if target.parent != tmp:
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_new(target, data, 0o600 if target.name in SECRET_FILES else 0o644)
            if target.parent != tmp:
                fsync_dir(target.parent)
        _write_new(tmp / "meta.json", _dumps(meta), 0o644)
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(releases)
        return final

    def activate(self, name: str, release_id: str) -> None:
        """Point `current` at a release with one atomic rename of a symlink."""
        link = self.current_link(name)
        tmp = link.with_name(f".current.tmp{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(Path("releases") / release_id, tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def cleanup_partial(self, name: str) -> list[Path]:
        """Remove half-written releases left by a run that died (we hold the lock)."""
        releases = self.cert_dir(name) / "releases"
        removed = []
        for tmp in sorted(releases.glob(".tmp-*")) if releases.is_dir() else []:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
        return removed

    def current(self, name: str) -> Release | None:
        link = self.current_link(name)
        if not link.is_symlink():
            return None
        target = link.parent / os.readlink(link)
        return self._read_release(name, target)

    def release(self, name: str, release_id: str) -> Release:
        rel = self._read_release(name, self.cert_dir(name) / "releases" / release_id)
        if rel is None:
            raise StoreError(f"no release {release_id} for certificate {name}")
        return rel

    def releases(self, name: str) -> list[Release]:
        """Every complete release, oldest first."""
        base = self.cert_dir(name) / "releases"
        if not base.is_dir():
            return []
        dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        return [r for r in (self._read_release(name, d) for d in dirs) if r is not None]

    def prune(self, name: str, keep: int, protect: frozenset[str] = frozenset()) -> list[str]:
        """Delete the oldest releases beyond `keep`; never the current one or `protect`
        (the rollback target, a release waiting for a retried deploy)."""
        current = self.current(name)
        protected = set(protect) | ({current.release_id} if current else set())
        candidates = [r for r in self.releases(name) if r.release_id not in protected]
        doomed = candidates[: max(0, len(candidates) - max(0, keep - len(protected)))]
        for rel in doomed:
            shutil.rmtree(rel.path)
        return [r.release_id for r in doomed]

    def find(self, name: str, release_id: str | None) -> Release | None:
        if release_id is None:
            return None
        return self._read_release(name, self.cert_dir(name) / "releases" / release_id)

    def _read_release(self, name: str, path: Path) -> Release | None:
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            return Release(
                cert_name=name,
                release_id=path.name,
                path=path,
                names=tuple(meta["names"]),
                key_type=KeyType(meta["key_type"]),
                not_before=dt.datetime.fromisoformat(meta["not_before"]),
                not_after=dt.datetime.fromisoformat(meta["not_after"]),
                fingerprint_sha256=meta["fingerprint_sha256"],
                issuer=meta["issuer"],
                ca=meta.get("ca", ""),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"unreadable release metadata {path / 'meta.json'}: {exc}") from exc

    # -- per-certificate state ---------------------------------------------------------

    def read_state(self, name: str) -> CertState:
        path = self.cert_dir(name) / "state.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return CertState()
        except (OSError, ValueError) as exc:
            raise StoreError(f"unreadable state file {path}: {exc}") from exc
        window = raw.get("window")
        return CertState(
            last_outcome=raw.get("last_outcome"),
            last_attempt=_dt(raw.get("last_attempt")),
            consecutive_failures=int(raw.get("consecutive_failures", 0)),
            window=_window(window),
            pending=(raw["pending"][0], raw["pending"][1]) if raw.get("pending") else None,
            failed_release=raw.get("failed_release"),
            previous_release=raw.get("previous_release"),
            last_success=_dt(raw.get("last_success")),
            attempts=int(raw.get("attempts", 0)),
            failures=int(raw.get("failures", 0)),
            refusals=int(raw.get("refusals", 0)),
            verify_ok=raw.get("verify_ok"),
        )

    def write_state(self, name: str, state: CertState) -> None:
        make_private_dir(self.cert_dir(name))
        raw = {
            "last_outcome": state.last_outcome,
            "last_attempt": state.last_attempt.isoformat() if state.last_attempt else None,
            "consecutive_failures": state.consecutive_failures,
            "window": {"start": state.window.start.isoformat(), "end": state.window.end.isoformat()}
            if state.window
            else None,
            "pending": list(state.pending) if state.pending else None,
            "failed_release": state.failed_release,
            "previous_release": state.previous_release,
            "last_success": state.last_success.isoformat() if state.last_success else None,
            "attempts": state.attempts,
            "failures": state.failures,
            "refusals": state.refusals,
            "verify_ok": state.verify_ok,
        }
        atomic_write(self.cert_dir(name) / "state.json", _dumps(raw), 0o600)

    def read_rehearsal(self, name: str) -> tuple[str, dt.datetime, str] | None:
        """The last passing rehearsal: (inputs digest, when, staging release), or None."""
        path = self.cert_dir(name) / "rehearsal.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return str(raw["inputs"]), dt.datetime.fromisoformat(raw["passed"]), str(raw["release"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"unreadable rehearsal record {path}: {exc}") from exc

    def write_rehearsal(self, name: str, inputs: str, passed: dt.datetime, release: str) -> None:
        make_private_dir(self.cert_dir(name))
        raw = {"inputs": inputs, "passed": passed.isoformat(), "release": release}
        atomic_write(self.cert_dir(name) / "rehearsal.json", _dumps(raw), 0o600)

    def forget_rehearsal(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.cert_dir(name) / "rehearsal.json").unlink()

    # -- history and accounts ----------------------------------------------------------

    def append_history(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(self.root / "history.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def history_backwards(self, chunk: int = 65536) -> Iterator[dict[str, Any]]:
        """History records, newest first, read backwards from the end of the file: the
        cost grows with the records read, not with the length of the history."""
        path = self.root / "history.jsonl"
        try:
            f = path.open("rb")
        except FileNotFoundError:
            return
        with f:
            end = f.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - chunk)
                f.seek(start)
                lines = (f.read(end - start) + tail).split(b"\n")
                tail = lines[0] if start > 0 else b""  # maybe cut: finished next round
                for line in reversed(lines[1:] if start > 0 else lines):
                    record = _record(line)
                    if record is not None:
                        yield record
                end = start

    def last_record(self, command: str) -> dict[str, Any] | None:
        """The newest history record of `command`, or None."""
        return next((r for r in self.history_backwards() if r.get("command") == command), None)

    def account_dir(self, directory_url: str) -> Path:
        ca_id = hashlib.sha256(directory_url.encode()).hexdigest()[:16]
        path = self.root / "accounts" / ca_id
        make_private_dir(path)
        return path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a torn last line (a crash mid-append) is not a run record
    return record if isinstance(record, dict) else None


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _dt(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _window(raw: dict[str, str] | None) -> RenewalWindow | None:
    if not raw:
        return None
    return RenewalWindow(
        dt.datetime.fromisoformat(raw["start"]), dt.datetime.fromisoformat(raw["end"])
    )
