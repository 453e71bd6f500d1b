"""The state directory: releases, the `current` link, per-certificate state, history, lock.

Side effects: filesystem only. Layout under the state directory (0700):

    lock                               flock(2) target; one run at a time
    history.jsonl                      append-only, one JSON object per run
    accounts/<ca-id>/                  ACME account key (0600) and registration
    certs/<name>/releases/<id>/        immutable: privkey.pem (0600), cert.pem,
                                       chain.pem, fullchain.pem, meta.json
    certs/<name>/current -> releases/<id>   flipped with one os.replace
    certs/<name>/state.json            last outcome, failure streak, ARI window
                                       (a damaged one is moved aside to
                                       state.json.corrupt-<time> and rebuilt)
    certs/<name>/rehearsal.json        (staging store) inputs of the last passing rehearsal

A release is written into `releases/.tmp-<id>`, every file fsynced, then renamed;
a crash leaves either no release or a complete one that is not current. The next
run removes `.tmp-*` leftovers under the lock. Pruning renames a release to
`.prune-<id>` before deleting it, so a kill mid-delete never leaves half a release
under a real id. `meta.json` records each file's SHA-256: a damaged key or
certificate is noticed without parsing it.

Nothing here trusts what it reads: a state file of the wrong shape, a release with
unreadable metadata or a `current` link that is missing or dangles is reported in a
`Snapshot` (read-only, for plan and status) and repaired by `repair` (under the lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout, trust
from .errors import LockHeld, StoreError
from .index import Index, signature
from .model import CertState, KeyType, Release, RenewalWindow

log = logging.getLogger(__name__)

KEY_FILE = "privkey.pem"
BUNDLE_FILE = "bundle.pem"  # fullchain + key in one file, for haproxy and the like
SECRET_FILES = frozenset({KEY_FILE, BUNDLE_FILE})
CHECKED_FILES = (KEY_FILE, "cert.pem", "chain.pem", "fullchain.pem", BUNDLE_FILE)
MAX_META = 1 << 20  # meta.json and state.json are a few hundred bytes


@dataclass(frozen=True)
class Issued:
    """A certificate the CA issued that is not (yet) part of a release."""

    path: Path
    key_pem: bytes
    fullchain: bytes
    ca: str
    facts: Mapping[str, Any]  # names, key_type, not_before, not_after, profile (if kept)

    @property
    def issued(self) -> dt.datetime | None:
        """When it was kept, from its file name (`<time>-<digest>.json`)."""
        return release_time(self.path.name)


@dataclass(frozen=True)
class Snapshot:
    """One certificate as the store holds it now, read once, with what is wrong with it.

    `current` is what renew will treat as live: the `current` link's release, or, when
    the link is missing or dangles, the newest healthy release it will be pointed at
    (`relink`). `damaged` says why the live key or certificate cannot be used.
    """

    current: Release | None
    state: CertState
    problems: tuple[str, ...] = ()  # said in plan and status, fixed by `Store.repair`
    state_corrupt: bool = False
    relink: str | None = None
    damaged: str | None = None


def atomic_write(path: Path, data: bytes, mode: int = 0o644, group: int | None = None) -> None:
    """Write a whole file or nothing: temp file, fsync, rename, fsync the directory.
    On any failure (ENOSPC included) the temporary file is removed again."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a killed run with our pid; never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path, group: int | None = None) -> None:
    """Create path and any missing parents 0700 (mkdir's parents=True would use the
    umask); with `group`, 0750 and owned by that group, for its readers."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        _share(folder, group, 0o750 if group is not None else 0o700)


def _share(path: Path, group: int | None, mode: int) -> None:
    """Set mode, and the group when one is given, without following a link."""
    if path.is_symlink():
        return
    if group is not None:
        os.chown(path, -1, group, follow_symlinks=False)
    os.chmod(path, mode)


class Store:
    """`group`: a group (gid) that may read the certificates and the run state (the
    `state_group` setting): directories 0750, keys and state files 0640, all of that
    group. Accounts stay 0700/0600 whatever it says. None: everything private."""

    def __init__(self, root: Path, group: int | None = None) -> None:
        self.root = root
        self.group = group
        self.dir_mode = 0o750 if group is not None else 0o700
        self.secret_mode = 0o640 if group is not None else 0o600
        self.index = Index(root)  # a cache of per-certificate reads (index.py)
        self._cert_dirs: dict[str, Path] = {}
        self._dir_strs: dict[str, str] = {}
        self._root = str(root)
        self._links: dict[str, Path] = {}

    def _dir(self, path: Path) -> None:
        make_private_dir(path, self.group)

    # -- lock -----------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the state directory's lock, or raise LockHeld at once."""
        self._ensure_root()
        path = self.root / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # ELOOP: a planted symlink, never followed
            raise StoreError(f"cannot open the lock {path}: {exc.strerror}") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"the lock {path} is not a regular file")
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
        """Create the state directory 0700, or refuse one that another user owns or can
        write (they could plant links that we, as root, would follow)."""
        why = trust.problem(self.root)
        if why is not None:
            raise StoreError(f"refusing to use the state directory {self.root}: {why}")
        try:
            self._dir(self.root)
            if self.group is not None:  # kept across runs: a renew never narrows it again
                _share(self.root, self.group, self.dir_mode)
        except OSError as exc:
            raise StoreError(f"cannot create state directory {self.root}: {exc.strerror}") from exc

    # -- releases -------------------------------------------------------------------

    def cert_dir(self, name: str) -> Path:
        folder = self._cert_dirs.get(name)
        if folder is None:  # made once per certificate: a run over 1000 asks often
            folder = self._cert_dirs[name] = Path(self._dir_of(name))
        return folder

    def _dir_of(self, name: str) -> str:
        """The certificate's directory as a str: the no-op path makes few Paths."""
        folder = self._dir_strs.get(name)
        if folder is None:
            folder = self._dir_strs[name] = f"{self._root}/{layout.CERTS}/{name}"
        return folder

    def current_link(self, name: str) -> Path:
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = Path(f"{self._dir_of(name)}/{layout.CURRENT}")
        return link

    def write_release(
        self, name: str, files: Mapping[str, bytes], meta: Mapping[str, Any], release_id: str
    ) -> Path:
        """Write a complete, immutable release; it is not current until `activate`."""
        releases = self.cert_dir(name) / "releases"
        self._dir(releases)
        final = releases / release_id
        tmp = releases / f".tmp-{release_id}"
        if final.exists():
            raise StoreError(f"release {final} already exists")
        shutil.rmtree(tmp, ignore_errors=True)
        digests = {f: hashlib.sha256(files[f]).hexdigest() for f in CHECKED_FILES if f in files}
        try:
            tmp.mkdir(mode=0o700)
            _share(tmp, self.group, self.dir_mode)
            for fname, data in files.items():
                target = tmp / fname
                if target.parent != tmp and not target.parent.is_dir():
                    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    _share(target.parent, self.group, self.dir_mode)
                secret = target.name in SECRET_FILES
                _write_new(target, data, self.secret_mode if secret else 0o644, self.group)
                if target.parent != tmp:
                    fsync_dir(target.parent)
            _write_new(tmp / "meta.json", _dumps({**meta, "sha256": digests}), 0o644)
            fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            raise
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
        """Remove half-written and half-pruned releases left by a run that died (we hold
        the lock)."""
        releases = self.cert_dir(name) / "releases"
        removed = []
        for pattern in (".tmp-*", ".prune-*"):
            for tmp in sorted(releases.glob(pattern)) if releases.is_dir() else []:
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        folder = self.cert_dir(name)  # a killed atomic_write or disk probe
        for pattern in (".*.tmp[0-9]*", ".write-probe*"):
            for tmp in sorted(folder.glob(pattern)) if folder.is_dir() else []:
                if tmp.is_file() or tmp.is_symlink():
                    tmp.unlink()
                    removed.append(tmp)
        return removed

    def current(self, name: str) -> Release | None:
        """The release `current` points at; None when the link is missing or dangles.
        StoreError when it points at a release whose metadata is unreadable."""
        folder = self._dir_of(name)
        link = f"{folder}/{layout.CURRENT}"
        try:
            target = os.readlink(link)
        except PermissionError as exc:
            raise StoreError(f"cannot read {link}: {exc.strerror}") from exc
        except OSError:  # missing, or not a link at all
            return None
        parts = target.split("/")
        if len(parts) != 2 or parts[0] != "releases" or parts[1].startswith(".") or not parts[1]:
            raise StoreError(f"{link} points outside the releases: {target}")
        return self._read_release(name, Path(f"{folder}/{target}"), live=target)

    def release(self, name: str, release_id: str) -> Release:
        rel = self._read_release(name, self.cert_dir(name) / "releases" / release_id)
        if rel is None:
            raise StoreError(f"no release {release_id} for certificate {name}")
        return rel

    def releases(self, name: str) -> list[Release]:
        """Every complete, readable release, oldest first (unreadable ones are skipped)."""
        base = self.cert_dir(name) / "releases"
        if not base.is_dir():
            return []
        dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        out = []
        for d in dirs:
            try:
                rel = self._read_release(name, d)
            except StoreError:
                continue  # kept on disk for the operator; never a candidate
            if rel is not None:
                out.append(rel)
        return out

    def prune(self, name: str, keep: int, protect: frozenset[str] = frozenset()) -> list[str]:
        """Delete the oldest releases beyond `keep`; never the current one or `protect`
        (the rollback target, a release waiting for a retried deploy)."""
        current = self.current(name)
        protected = set(protect) | ({current.release_id} if current else set())
        candidates = [r for r in self.releases(name) if r.release_id not in protected]
        doomed = candidates[: max(0, len(candidates) - max(0, keep - len(protected)))]
        for rel in doomed:
            # Out of the way first: a kill mid-delete leaves `.prune-*`, never half a
            # release under its real id (cleaned by the next run).
            gone = rel.path.with_name(f".prune-{rel.release_id}")
            os.rename(rel.path, gone)
            shutil.rmtree(gone)
        return [r.release_id for r in doomed]

    def find(self, name: str, release_id: str | None) -> Release | None:
        """A release by id; None when it is gone or unreadable (or the id is not one)."""
        if not release_id or "/" in release_id or release_id.startswith("."):
            return None
        try:
            return self._read_release(name, self.cert_dir(name) / "releases" / release_id)
        except StoreError:
            return None

    def check_writable(self, name: str, min_free: int) -> str:
        """Before ordering: enough free space, and a file can really be written and
        synced in the certificate's directory (a read-only or full filesystem, a quota).
        Raises StoreError; returns a note."""
        folder = self.cert_dir(name)
        try:
            self._dir(folder)
            st = os.statvfs(folder)
            free = st.f_bavail * st.f_frsize
            if free < min_free:
                raise StoreError(
                    f"only {free // 2**20} MiB free under {folder} (need {min_free // 2**20} "
                    "MiB: deploy.min_free_mb): not ordering a certificate that cannot be stored"
                )
            probe = folder / f".write-probe{os.getpid()}"
            try:
                atomic_write(probe, b"x" * 65536, 0o600)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"cannot write under {folder}: {exc.strerror or exc}: not ordering"
            ) from exc
        return f"{free // 2**20} MiB free, writable"

    # -- issued, not yet staged ------------------------------------------------------

    def keep_issued(
        self,
        name: str,
        key_pem: bytes,
        fullchain: bytes,
        ca: str,
        facts: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write an issued key and chain at once (0600), before staging: a precious
        issuance survives a stage failure or a kill. `facts` (names, key type, validity,
        profile) let plan and status describe it without parsing the certificate."""
        folder = self.cert_dir(name) / "issued"
        make_private_dir(folder)
        digest = hashlib.sha256(fullchain).hexdigest()[:16]
        path = folder / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{digest}.json"
        record = {"ca": ca, "key": key_pem.decode(), "fullchain": fullchain.decode(),
                  "facts": dict(facts or {})}  # fmt: skip
        atomic_write(path, _dumps(record), 0o600)
        return path

    def issued(self, name: str) -> list[Issued]:
        """Kept issuances, newest first; unreadable ones are skipped (and kept)."""
        folder = self.cert_dir(name) / "issued"
        out = []
        for path in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
            try:
                raw = _read_json(path)
                key, chain = str(raw["key"]).encode(), str(raw["fullchain"]).encode()
                facts = raw.get("facts")
                facts = facts if isinstance(facts, dict) else {}
                out.append(Issued(path, key, chain, str(raw.get("ca", "")), facts))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def forget_issued(self, path: Path) -> None:
        """The issuance is in a release now (which holds the same key and chain)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    # -- integrity and repair -------------------------------------------------------

    def damage(self, release: Release) -> str | None:
        """Why the release's key or certificates cannot be used, or None. Compares the
        SHA-256 recorded at staging; a release without digests is parsed instead."""
        if not release.digests:
            return _parse_damage(release.path)
        paths = [f"{release.path}/{fname}" for fname in release.digests]
        now = dt.datetime.now(dt.UTC)
        if self.index.verified(release.cert_name, release.release_id, paths, now):
            return None  # matched less than a day ago, and unchanged since
        for path, digest in zip(paths, release.digests.values(), strict=True):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                return f"{path}: {exc.strerror}"
            if hashlib.sha256(data).hexdigest() != digest:
                return f"{path} changed since it was staged (SHA-256 differs)"
        self.index.matched(release.cert_name, release.release_id, paths, now)
        return None

    def save_index(self, names: list[str]) -> None:
        """Keep what this run read for the next (renew, under the lock)."""
        try:
            self.index.save(names, lambda p, b: atomic_write(p, b, self.secret_mode, self.group))
        except OSError as exc:  # a cache: the next run reads the files themselves
            log.warning("cannot write %s: %s", self.index.path, exc.strerror or exc)

    def snapshot(self, name: str) -> Snapshot:
        """Read one certificate's state and live release, saying what is wrong. Writes
        nothing: plan and status show what renew (which calls `repair`) will do."""
        problems: list[str] = []
        state_corrupt = False
        try:
            state = self.read_state(name)
        except StoreError as exc:
            state, state_corrupt = CertState(), True
            problems.append(f"{exc}: it will be moved aside and rebuilt")
        try:
            current = self.current(name)
        except StoreError as exc:
            problems.append(str(exc))
            current = None
        relink = None
        if current is None:
            exclude = {state.failed_release, state.pending[0] if state.pending else None}
            try:
                candidates = self.releases(name)
            except OSError as exc:  # a reader without access to the store
                problems.append(f"cannot read the releases: {exc.strerror or exc}")
                candidates = []
            healthy = [
                r for r in candidates if r.release_id not in exclude and self.damage(r) is None
            ]
            if healthy:
                current, relink = healthy[-1], healthy[-1].release_id
                link = self.current_link(name)
                what = "dangles" if os.path.lexists(link) else "is missing"
                if not problems:
                    problems.append(f"{link} {what}")
                problems.append(f"current will point at the newest healthy release {relink}")
        damaged = self.damage(current) if current is not None else None
        if damaged:
            problems.append(f"the live release {current.release_id if current else ''} is "
                            f"damaged: {damaged}")  # fmt: skip
        return Snapshot(current, state, tuple(problems), state_corrupt, relink, damaged)

    def repair(self, name: str, snap: Snapshot, now: dt.datetime) -> list[str]:
        """Fix what `snapshot` found (we hold the lock); returns what was done."""
        done = []
        if snap.state_corrupt:
            path = self.cert_dir(name) / "state.json"
            aside = path.with_name(f"state.json.corrupt-{now:%Y%m%dT%H%M%S%fZ}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, aside)
                done.append(f"moved the unreadable {path.name} aside to {aside.name}")
            self.write_state(name, snap.state)
        if snap.relink is not None:
            self.activate(name, snap.relink)
            done.append(f"pointed current at the newest healthy release {snap.relink}")
        if self.group is not None:
            self.share(name)
        return done

    def share(self, name: str) -> None:
        """Give `group` read access to everything of one certificate (releases made
        before `state_group` was set included); idempotent, a few chmods per run."""
        base = self.cert_dir(name)
        if not base.is_dir():
            return
        for part in (self.root / "certs", base):
            _share(part, self.group, self.dir_mode)
        for folder, dirs, files in os.walk(base, followlinks=False):
            for d in dirs:
                _share(Path(folder) / d, self.group, self.dir_mode)
            for f in files:
                path = Path(folder) / f
                secret = f in SECRET_FILES or path.parent == base  # state files: 0640
                _share(path, self.group, self.secret_mode if secret else 0o644)

    def _read_release(self, name: str, path: Path, live: str | None = None) -> Release | None:
        """A release from its meta.json; `live`: it is the one `current` points at (its
        reading is kept in the index)."""
        try:
            meta, sig = (None, None)
            if live is not None:
                meta, sig = self.index.meta(name, live, f"{path}/meta.json")
            if meta is None:
                meta = _read_json(path / "meta.json")
                if live is not None:
                    self.index.read_meta(name, live, sig, meta)
            digests = meta.get("sha256") or {}
            if not isinstance(digests, dict) or not all(
                f in CHECKED_FILES and isinstance(d, str) for f, d in digests.items()
            ):
                raise ValueError("bad sha256 table")
            return Release(
                cert_name=name,
                release_id=path.name,
                path=path,
                names=tuple(_str_list(meta["names"])),
                key_type=KeyType(meta["key_type"]),
                not_before=_aware(meta["not_before"]),
                not_after=_aware(meta["not_after"]),
                fingerprint_sha256=str(meta["fingerprint_sha256"]),
                issuer=str(meta["issuer"]),
                ca=str(meta.get("ca", "")),
                digests=digests,
                profile=_opt_str(meta.get("profile")),
            )
        except FileNotFoundError:
            if path.is_dir():
                raise StoreError(f"release {path} has no meta.json") from None
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"unreadable release metadata {path / 'meta.json'}: {exc}") from exc

    # -- per-certificate state ---------------------------------------------------------

    def read_state(self, name: str) -> CertState:
        """The certificate's state; StoreError naming the file when it is unreadable or
        of the wrong shape (never a crash: every field is checked)."""
        path = f"{self._dir_of(name)}/state.json"  # a str: the no-op path makes no Path
        try:
            raw, sig = self.index.state(name, path)
            if raw is None:
                raw = _read_json(Path(path))
                self.index.read_state(name, sig, raw)
            pending = raw.get("pending")
            if pending is not None:
                new, old = pending  # a pair: [new release, release it replaced]
                pending = (_opt_str(new) or "", _opt_str(old))
                if not pending[0]:
                    raise ValueError("pending without a release")
            return CertState(
                last_outcome=_opt_str(raw.get("last_outcome")),
                last_attempt=_dt(raw.get("last_attempt")),
                consecutive_failures=_count(raw.get("consecutive_failures", 0)),
                window=_window(raw.get("window")),
                pending=pending,
                failed_release=_opt_str(raw.get("failed_release")),
                previous_release=_opt_str(raw.get("previous_release")),
                last_success=_dt(raw.get("last_success")),
                attempts=_count(raw.get("attempts", 0)),
                failures=_count(raw.get("failures", 0)),
                refusals=_count(raw.get("refusals", 0)),
                verify_ok=_opt_bool(raw.get("verify_ok")),
                retry_after=_dt(raw.get("retry_after")),
                revoked=_pair(raw.get("revoked")),
                ari_next=_dt(raw.get("ari_next")),
                last_error=_opt_str(raw.get("last_error")),
            )
        except FileNotFoundError:
            return CertState()
        except OSError as exc:
            raise StoreError(f"unreadable state file {path}: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise StoreError(f"state file {path} has the wrong shape: {exc}") from exc

    def write_state(self, name: str, state: CertState) -> None:
        self._dir(self.cert_dir(name))
        raw = {
            "last_outcome": state.last_outcome,
            "last_attempt": state.last_attempt.isoformat() if state.last_attempt else None,
            "consecutive_failures": state.consecutive_failures,
            "window": _window_json(state.window),
            "pending": list(state.pending) if state.pending else None,
            "failed_release": state.failed_release,
            "previous_release": state.previous_release,
            "last_success": state.last_success.isoformat() if state.last_success else None,
            "attempts": state.attempts,
            "failures": state.failures,
            "refusals": state.refusals,
            "verify_ok": state.verify_ok,
            "retry_after": state.retry_after.isoformat() if state.retry_after else None,
            "revoked": list(state.revoked) if state.revoked else None,
            "ari_next": state.ari_next.isoformat() if state.ari_next else None,
            "last_error": state.last_error,
        }
        path = self.cert_dir(name) / "state.json"
        atomic_write(path, _dumps(raw), self.secret_mode, self.group)
        self.index.read_state(name, signature(str(path)), raw)  # what the next run reads

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
        self._dir(self.cert_dir(name))
        raw = {"inputs": inputs, "passed": passed.isoformat(), "release": release}
        atomic_write(
            self.cert_dir(name) / "rehearsal.json", _dumps(raw), self.secret_mode, self.group
        )

    def forget_rehearsal(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.cert_dir(name) / "rehearsal.json").unlink()

    # -- history and accounts ----------------------------------------------------------

    def append_history(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root / "history.jsonl", flags, 0o600)
        try:
            if self.group is not None:
                os.fchown(fd, -1, self.group)
                os.fchmod(fd, self.secret_mode)
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def history_backwards(self, chunk: int = 65536) -> Iterator[dict[str, Any]]:
        """History records, newest first, read backwards from the end of the file: the
        cost grows with the records read, not with the length of the history."""
        path = self.root / "history.jsonl"
        try:
            f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
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
        path = self.account_path(directory_url)
        make_private_dir(path)
        return path

    def account_path(self, directory_url: str) -> Path:
        """Where a CA's account and what it said live; not created (readers use it)."""
        return self.root / "accounts" / hashlib.sha256(directory_url.encode()).hexdigest()[:16]


def release_time(ref: str) -> dt.datetime | None:
    """When a release was staged (or an issuance kept), from the time its id starts with."""
    try:
        return dt.datetime.strptime(ref[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _write_new(path: Path, data: bytes, mode: int, group: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, mode)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a small file, opened without following a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_META + 1)
    if len(data) > MAX_META:
        raise ValueError(f"larger than {MAX_META} bytes")
    raw = json.loads(data.decode("utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _parse_damage(folder: Path) -> str | None:
    """For releases staged before digests were recorded: parse and match key and cert."""
    from . import crypto  # deferred: cryptography only where it is needed

    try:
        key = crypto.load_key((folder / KEY_FILE).read_bytes())
        if not crypto.key_matches(key, (folder / "cert.pem").read_bytes()):
            return f"{folder / KEY_FILE} does not match {folder / 'cert.pem'}"
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    except (ValueError, TypeError) as exc:
        return f"{folder}: key or certificate does not parse ({exc})"
    return None


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError("expected a list of strings")
    return value


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _pair(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    first, second = value
    return str(first), str(second)


def _opt_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"expected true, false or null, got {type(value).__name__}")


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    raise ValueError(f"expected a count, got {value!r:.40}")


def _aware(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected a time, got {type(value).__name__}")
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"time without a time zone: {value}")
    return when


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


def _dt(value: Any) -> dt.datetime | None:
    return _aware(value) if value else None


def _window(raw: Any) -> RenewalWindow | None:
    if not raw:
        return None
    url = raw.get("explanation_url")
    return RenewalWindow(
        _aware(raw["start"]),
        _aware(raw["end"]),
        url if isinstance(url, str) else None,
        _dt(raw.get("next_check")),
    )


def _window_json(window: RenewalWindow | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "explanation_url": window.explanation_url,
        "next_check": window.next_check.isoformat() if window.next_check else None,
    }
