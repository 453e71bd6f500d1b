"""The state directory, as one facade over its parts: releases and the `current` link
(here), a certificate's state (`certstate`, one field table), kept issuances
(`issued`), the audit log (`history`), the rehearsal record (`rehearsal`), whole-file
writes (`atomic`); every name comes from `layout`.

Side effects: filesystem only. Under the state directory (0700): `lock` (flock; one
run at a time), `history.jsonl`, `accounts/<ca-id>/`, and per certificate
`certs/<name>/releases/<id>/` (immutable: privkey.pem 0600, cert.pem, chain.pem,
fullchain.pem, bundle.pem, meta.json, rendered/), `current -> releases/<id>` (flipped
with one os.replace), `state.json` (a damaged one is moved aside to
state.json.corrupt-<time> and rebuilt), `issued/` and, in the staging store,
`rehearsal.json`.

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
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import StoreError
from ..index import Index, signature
from ..model import CertState, Release
from . import certstate
from . import issued as issued_mod
from . import lock as lock_mod
from . import releases as releases_mod
from .atomic import (
    append_line,
    atomic_write,
    dumps,
    fsync_dir,
    make_private_dir,
    probe_writable,
    read_json,
    replacing,
    share_tree,
)
from .history import History
from .issued import Issued, release_time
from .quiet import Quiet

log = logging.getLogger(__name__)

KEY_FILE = layout.KEY
BUNDLE_FILE = layout.BUNDLE
SECRET_FILES = layout.SECRET_FILES
CHECKED_FILES = layout.CHECKED_FILES

__all__ = [
    "BUNDLE_FILE", "CHECKED_FILES", "KEY_FILE", "SECRET_FILES", "Issued", "Snapshot", "Store",
    "append_line", "atomic_write", "fsync_dir", "make_private_dir", "release_time", "replacing",
]  # fmt: skip


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


class Store:
    """`group`: a group (gid) that may read the certificates and the run state (the
    `state_group` setting): directories 0750, keys and state files 0640, all of that
    group. Accounts stay 0700/0600 whatever it says. None: everything private.

    Its size: it is the one door to the state directory for every other module, so its
    methods are many; each is a few lines over the part that does the work (releases,
    certstate, issued, history, lock, atomic), except `snapshot`, which reads a
    certificate whole and says what is wrong with it."""

    def __init__(self, root: Path, group: int | None = None) -> None:
        self.root = root
        self.group = group
        self.dir_mode = 0o750 if group is not None else 0o700
        self.secret_mode = 0o640 if group is not None else 0o600
        self.index = Index(root)  # a cache of per-certificate reads (index.py)
        self.quiet = Quiet(self.index, self._dir_of, root)  # the no-op cache (quiet.py)
        self._cert_dirs: dict[str, Path] = {}
        self._dir_strs: dict[str, str] = {}
        self._root = str(root)
        self._links: dict[str, Path] = {}

    def _dir(self, path: Path) -> None:
        make_private_dir(path, self.group)

    # -- lock -----------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the state directory's lock, or raise LockHeld at once (lock.py)."""
        with lock_mod.held(self.root, self.group, self.dir_mode) as held:
            self.quiet.held = held
            try:
                yield
            finally:
                self.quiet.held = None

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
        releases = self.cert_dir(name) / layout.RELEASES
        self._dir(releases)
        final = releases_mod.write(releases, release_id, files, meta, self.group,
                                   (self.dir_mode, self.secret_mode))  # fmt: skip
        # its files were just written with the digests in its meta: as good as matched
        checked = sorted(f for f in layout.CHECKED_FILES if f in files)
        self.index.matched(name, release_id, [f"{final}/{f}" for f in checked],
                           dt.datetime.now(dt.UTC))  # fmt: skip
        return final

    def activate(self, name: str, release_id: str) -> None:
        """Point `current` at a release with one atomic rename of a symlink."""
        link = self.current_link(name)
        tmp = link.with_name(f".current.tmp{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(Path(layout.RELEASES) / release_id, tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def cleanup_partial(self, name: str, now: dt.datetime) -> list[Path]:
        """Remove half-written and half-pruned releases left by a run that died (we hold
        the lock). Two stats instead of two folder reads when neither folder changed
        since it was last found clean (index.py)."""
        folder = self._dir_of(name)
        sigs = [signature(folder), signature(f"{folder}/{layout.RELEASES}")]
        if self.index.dirs_clean(name, sigs):
            return []
        removed = releases_mod.leftovers(self.cert_dir(name))
        if not removed:
            self.index.dirs_scanned(name, sigs, now)
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
        inside = len(parts) == 2 and parts[0] == layout.RELEASES and parts[1][:1] not in ("", ".")
        if not inside:
            raise StoreError(f"{link} points outside the releases: {target}")
        return self._read_release(name, Path(f"{folder}/{target}"), live=target)

    def release(self, name: str, release_id: str) -> Release:
        rel = self._read_release(name, self.cert_dir(name) / layout.RELEASES / release_id)
        if rel is None:
            raise StoreError(f"no release {release_id} for certificate {name}")
        return rel

    def releases(self, name: str) -> list[Release]:
        """Every complete, readable release, oldest first (unreadable ones are skipped)."""
        base = self.cert_dir(name) / layout.RELEASES
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
            return self._read_release(name, self.cert_dir(name) / layout.RELEASES / release_id)
        except StoreError:
            return None

    def check_writable(self, name: str, min_free: int) -> str:
        """Before ordering: enough free space, and a file can really be written and
        synced in the certificate's directory (a read-only or full filesystem, a quota).
        Raises StoreError; returns a note."""
        folder = self.cert_dir(name)
        try:
            self._dir(folder)
        except OSError as exc:
            raise StoreError(f"cannot write under {folder}: {exc.strerror or exc}: not "
                             "ordering") from exc  # fmt: skip
        return probe_writable(folder, min_free)

    # -- issued, not yet staged ------------------------------------------------------

    def keep_issued(
        self,
        name: str,
        key_pem: bytes,
        fullchain: bytes,
        ca: str,
        facts: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write an issued key and chain at once (0600), before staging (issued.py)."""
        return issued_mod.keep(self.cert_dir(name), key_pem, fullchain, ca, facts)

    def issued(self, name: str) -> list[Issued]:
        """Kept issuances, newest first; unreadable ones are skipped (and kept)."""
        return issued_mod.kept(self.cert_dir(name))

    def forget_issued(self, path: Path) -> None:
        """The issuance is in a release now (which holds the same key and chain)."""
        issued_mod.forget(path)

    # -- integrity and repair -------------------------------------------------------

    def damage(self, release: Release) -> str | None:
        """Why the release's key or certificates cannot be used, or None. Compares the
        SHA-256 recorded at staging; a release without digests is parsed instead."""
        if not release.digests:
            return releases_mod.parse_damage(release.path)
        paths = [f"{release.path}/{fname}" for fname in release.digests]
        now = dt.datetime.now(dt.UTC)
        if self.index.verified(release.cert_name, release.release_id, paths, now):
            return None  # matched less than a day ago, and unchanged since
        why = releases_mod.digest_damage(paths, release.digests.values())
        if why is None:
            self.index.matched(release.cert_name, release.release_id, paths, now)
        return why

    def keep_index(self) -> None:
        """This run keeps what it reads in the index (renew, under the lock)."""
        self.index.write(self.secret_mode, self.group)

    def save_index(self, names: list[str]) -> None:
        """Keep what this run read for the next (renew, under the lock)."""
        try:
            self.index.save(names)
        except OSError as exc:  # a cache: the next run reads the files themselves
            log.warning("cannot write %s: %s", self.index.path, exc.strerror or exc)
            return
        self.quiet.end()

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
            path = self.cert_dir(name) / layout.STATE
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
        if base.is_dir():
            share_tree(self.root / layout.CERTS, base, self.group,
                       (self.dir_mode, self.secret_mode), SECRET_FILES)  # fmt: skip

    def _read_release(self, name: str, path: Path, live: str | None = None) -> Release | None:
        """A release from its meta.json; `live`: it is the one `current` points at (its
        reading is kept in the index)."""
        try:
            meta, sig = (None, None)
            if live is not None:
                meta, sig = self.index.meta(name, live, f"{path}/meta.json")
            if meta is None:
                meta = read_json(path / layout.META)
                if live is not None:
                    self.index.read_meta(name, live, sig, meta)
            return releases_mod.from_meta(name, path, meta)
        except FileNotFoundError:
            if path.is_dir():
                raise StoreError(f"release {path} has no meta.json") from None
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"unreadable release metadata {path / 'meta.json'}: {exc}") from exc

    # -- per-certificate state ---------------------------------------------------------

    def read_state(self, name: str) -> CertState:
        """The certificate's state; StoreError naming the file when it is unreadable or
        of the wrong shape (never a crash: every field is checked, certstate.py)."""
        path = f"{self._dir_of(name)}/{layout.STATE}"  # a str: the no-op path makes no Path
        try:
            raw, sig = self.index.state(name, path)
            if raw is None:
                raw = read_json(Path(path))
                self.index.read_state(name, sig, raw)
            return certstate.decode(raw)
        except FileNotFoundError:
            return CertState()
        except OSError as exc:
            raise StoreError(f"unreadable state file {path}: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise StoreError(f"state file {path} has the wrong shape: {exc}") from exc

    def write_state(self, name: str, state: CertState) -> None:
        self._dir(self.cert_dir(name))
        raw = certstate.encode(state)
        path = self.cert_dir(name) / layout.STATE
        atomic_write(path, dumps(raw), self.secret_mode, self.group)
        self.index.read_state(name, signature(str(path)), raw)  # what the next run reads

    # -- history and accounts ----------------------------------------------------------

    def append_history(self, record: Mapping[str, Any]) -> None:
        History(self.root, self.group, self.secret_mode).append(record)

    def history_backwards(self, chunk: int = 65536, lazy: bool = False) -> Iterator[dict[str, Any]]:
        """History records, newest first (history.py; `lazy`: large ones' certificates
        are decoded as they are walked)."""
        return History(self.root).backwards(chunk, lazy)

    def last_record(self, command: str) -> dict[str, Any] | None:
        """The newest history record of `command`, or None."""
        return next((r for r in self.history_backwards() if r.get("command") == command), None)

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """Each command's last run: {"time", "exit_status"} (history.py)."""
        history = History(self.root)
        runs = history.last_runs()
        if runs is None:  # a state directory of an earlier version: the history itself
            runs = history.scanned_runs()
        return runs

    def account_dir(self, directory_url: str) -> Path:
        path = self.account_path(directory_url)
        make_private_dir(path)
        return path

    def account_path(self, directory_url: str) -> Path:
        """Where a CA's account and what it said live; not created (readers use it)."""
        return self.root / layout.ACCOUNTS / hashlib.sha256(directory_url.encode()).hexdigest()[:16]

