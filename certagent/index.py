"""One small database that spares a no-op run, `plan` and `status` the reading and
hashing of every certificate's files (issues #16, #28): `<state_dir>/index.sqlite3`.

It is a cache, never the truth. For each certificate it keeps what was last read of
`state.json` and of the live release's `meta.json`, each with the file's signature
(size, mtime, ctime, inode), and the signatures of the key and certificates when their
SHA-256 last matched. A value is used only while its file's signature is unchanged: any
write, rename or chmod changes the ctime, which no one can set back. Digests are
checked again at least once a day whatever the signatures say. A missing, unreadable,
busy or foreign index is ignored (the files are read) and rebuilt by the next `renew`
(which alone writes it, under the lock); readers (`status`, `plan`, a monitoring user)
open it read-only.

One row per certificate, asked for by name when the certificate is read: memory does
not grow with the number of certificates (10,000 of them are about 14 MB of entries),
and a run that changes one certificate writes one row, in one transaction (SQLite's
journal: a killed write leaves the previous index). A reader keeps nothing of what it
reads; the writer writes what it learnt every few hundred certificates, so a first run
over 10,000 does not hold 10,000 entries either.

Beside them, the no-op cache (store/quiet.py): a row per certificate that a `renew`
found with nothing to do, and the stamp that says which run wrote them.

Side effects: reads the index and stats files; `save` writes the index.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

INDEX_FILE = "index.sqlite3"
OLD_FILES = ("index.json",)  # earlier versions' index: removed when this one is written
VERSION = 4  # PRAGMA user_version: a row per certificate, its entry as JSON text; quiet

# a no-op cache row (store/quiet.py): until (µs since the epoch), the files' signatures,
# the decision's reason and renewal time, the live release, its expiry, the last
# outcome, the CA that issued it and the note when that is a fallback CA
QuietEntry = tuple[int, str, str, str | None, str | None, str | None, str | None, str | None,
                 str | None]  # fmt: skip
REVERIFY = dt.timedelta(hours=24)  # digests are hashed again at least this often
RACY = dt.timedelta(seconds=2)  # a folder changed more recently is looked into again
BUSY = 2.0  # seconds a reader or the writer waits for the other's lock

Sig = list[int]

_SCHEMAS = {
    "certs": "CREATE TABLE certs (name TEXT PRIMARY KEY, entry TEXT NOT NULL)",
    "quiet": "CREATE TABLE quiet (name TEXT PRIMARY KEY, until INTEGER NOT NULL, sig TEXT "
    "NOT NULL, reason TEXT NOT NULL, renew_at TEXT, release TEXT, not_after TEXT, "
    "last_outcome TEXT, ca TEXT, fallback TEXT)",
    "meta": "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
}


def signature(path: str) -> Sig | None:
    """What changes when a file's content, name or mode does (ctime cannot be set)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _regular(path: Path) -> bool:
    """The index is a plain file of its own: never a link someone planted."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


class Index:
    """Entries are read one at a time, when a certificate's is asked for, and let go.
    A reader only reads. The writer (`renew`, under the lock, after `write`) keeps
    what it learnt in `_fresh` and writes it out every FLUSH certificates and at
    `save`: memory stays flat however many certificates are read anew."""

    FLUSH = 256
    QUIET_FLUSH = 4096  # no-op cache rows are small (~300 bytes): fewer transactions

    def __init__(self, root: Path) -> None:
        self.path = root / INDEX_FILE
        self._db: sqlite3.Connection | None = None
        self._opened = ""  # "", "ro" or "rw"
        self._writing: tuple[int, int | None] | None = None  # mode and group
        self._fresh: dict[str, dict[str, Any]] = {}  # what this run read anew
        self._quiet: dict[str, QuietEntry | None] = {}  # no-op cache rows (None: drop)
        self._quiet_reset = False  # the earlier rows are dropped at the next write
        self._stamp: str | None = None  # written at `save`
        self._failed: OSError | None = None  # a write during the run that failed
        self._lock = threading.RLock()  # one connection, asked from worker threads too
        # the entry decoded last (state, meta and digests are asked for in a row): one
        # tuple, replaced whole, so threads never see a name with another's entry
        self._last: tuple[str, dict[str, Any]] = ("", {})

    def _conn(self) -> sqlite3.Connection | None:
        if not self._opened:
            self._opened = "ro"
            self._db = _open(self.path)
        return self._db

    def _entry(self, name: str) -> dict[str, Any]:
        last = self._last
        if last[0] == name and name:
            return last[1]
        entry = _decode(self._one("SELECT entry FROM certs WHERE name = ?", (name,)))
        if entry:
            self._last = (name, entry)
        return entry

    def _note(self, name: str, **parts: Any) -> None:
        if self._writing is None:
            return  # a reader: nothing it learns is kept
        with self._lock:
            self._fresh.setdefault(name, {}).update(parts)
            if len(self._fresh) >= self.FLUSH:
                self._flush_quietly()

    # -- state.json -------------------------------------------------------------------

    def state(self, name: str, path: str) -> tuple[dict[str, Any] | None, Sig | None]:
        """The cached raw state when the file is unchanged, and the file's signature."""
        sig = signature(path)
        entry = self._entry(name)
        if (
            sig is not None
            and entry.get("state_sig") == sig
            and isinstance(entry.get("state"), dict)
        ):
            return entry["state"], sig
        return None, sig

    def read_state(self, name: str, sig: Sig | None, raw: dict[str, Any]) -> None:
        if sig is not None:
            self._note(name, state_sig=sig, state=raw)

    # -- the live release's meta.json --------------------------------------------------

    def meta(self, name: str, target: str, path: str) -> tuple[dict[str, Any] | None, Sig | None]:
        sig = signature(path)
        entry = self._entry(name)
        ok = entry.get("target") == target and entry.get("meta_sig") == sig
        if sig is not None and ok and isinstance(entry.get("meta"), dict):
            return entry["meta"], sig
        return None, sig

    def read_meta(self, name: str, target: str, sig: Sig | None, raw: dict[str, Any]) -> None:
        if sig is not None:
            self._note(name, target=target, meta_sig=sig, meta=raw)

    # -- digests of the key and certificates --------------------------------------------

    def verified(self, name: str, release_id: str, paths: list[str], now: dt.datetime) -> bool:
        """Whether the release's files are those whose digests matched less than a day
        ago (unchanged since)."""
        entry = self._entry(name).get("verified")
        if not isinstance(entry, dict) or entry.get("release") != release_id:
            return False
        try:
            at = dt.datetime.fromisoformat(str(entry["at"]))
        except (KeyError, ValueError):
            return False
        if at.tzinfo is None or not (now - REVERIFY < at <= now + dt.timedelta(minutes=5)):
            return False
        sigs = [signature(p) for p in paths]
        return None not in sigs and entry.get("sigs") == sigs

    def verified_at(self, name: str) -> dt.datetime | None:
        """When the live release's digests last matched (this run, else an earlier)."""
        found = self._fresh.get(name, {}).get("verified") or self._entry(name).get("verified")
        return aware(found.get("at") if isinstance(found, dict) else None)

    def matched(self, name: str, release_id: str, paths: list[str], now: dt.datetime) -> None:
        """The release's digests matched just now (or its files were just written with
        them)."""
        sigs = [signature(p) for p in paths]
        if None not in sigs:
            self._note(name, verified={"release": release_id, "sigs": sigs, "at": now.isoformat()})

    # -- the certificate's folders, scanned for leftovers of killed writes -------------

    def dirs_clean(self, name: str, sigs: list[Sig | None]) -> bool:
        """Whether the certificate's folder and its releases are as they were when last
        found without leftovers: no entry was made or removed in either since (that
        changes a folder's mtime and ctime), so there is nothing to look for."""
        return None not in sigs and self._entry(name).get("dirs") == sigs

    def dirs_scanned(self, name: str, sigs: list[Sig | None], now: dt.datetime) -> None:
        """Both folders were just found without leftovers (`sigs` taken before looking).
        Kept only when both changed more than RACY ago: a change in the same clock tick
        as the look would not change the mtime (racily clean, as git says)."""
        limit = (now - RACY).timestamp() * 1e9
        if None not in sigs and all(s is not None and max(s[1], s[2]) < limit for s in sigs):
            self._note(name, dirs=sigs)

    # -- the no-op cache (store/quiet.py) ----------------------------------------------

    def stamp(self) -> str | None:
        """What the run that wrote the no-op cache's rows said about them."""
        return self._one("SELECT value FROM meta WHERE key = 'quiet'", ())

    def quiet(self, names: list[str]) -> dict[str, tuple[Any, ...]]:
        """Those of `names` that have a no-op cache row: their rows, as the file has them."""
        marks = ", ".join("?" * len(names))
        found = self._all(f"{_QUIET_SELECT}({marks})", tuple(names)) if names else []
        return {row[0]: row[1:] for row in found if isinstance(row[0], str)}

    def keep_quiet(self, name: str, row: QuietEntry | None) -> None:
        """The certificate's row as this run found it; None drops it (the writer only)."""
        if self._writing is not None:
            with self._lock:
                self._quiet[name] = row
                if len(self._quiet) >= self.QUIET_FLUSH:
                    self._flush_quietly()

    def restart_quiet(self, stamp: str) -> None:
        """Earlier rows are dropped at the next write; `stamp` is written at `save`."""
        with self._lock:
            self._quiet_reset, self._stamp = True, stamp

    def _one(self, sql: str, args: tuple[str, ...]) -> str | None:
        found = self._all(sql, args)
        return found[0][0] if found and isinstance(found[0][0], str) else None

    def _all(self, sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            db = self._conn()
            if db is None:
                return []
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.Error:  # busy, damaged, foreign: as if there were none
                return []

    # -- writing ------------------------------------------------------------------------

    def write(self, mode: int = 0o600, group: int | None = None) -> None:
        """From now on this process keeps what it reads (renew, under the lock); the
        file is created with `mode` and `group` (SQLite gives its journal the same)."""
        with self._lock:
            self._writing = (mode, group)

    def save(self, names: list[str]) -> None:
        """Write what is left of what this run read and drop the rows of certificates
        not in `names` (those configured now); a run that learnt nothing new writes
        nothing. A damaged or foreign index is replaced. OSError when the index cannot
        be written (a cache: the caller warns and goes on)."""
        with self._lock:
            try:
                if self._failed is not None:
                    raise self._failed
                self._flush(set(names))
            finally:
                self.close()

    def _flush_quietly(self) -> None:
        try:
            self._flush(None)
        except OSError as exc:  # said at `save`; this run keeps nothing more
            self._writing, self._fresh, self._quiet, self._failed = None, {}, {}, exc

    def _flush(self, keep: set[str] | None) -> None:
        """`keep`: the names to keep (others' rows are dropped); None: drop none."""
        if self._writing is None:
            return
        try:
            try:
                self._write(keep)
            except sqlite3.OperationalError:
                raise  # busy, full, read-only: said below, the file left as it is
            except sqlite3.DatabaseError:  # damaged or not a database: start it again
                self.close()
                _remove(self.path)
                self._write(keep)
        except sqlite3.Error as exc:
            raise OSError(f"index {self.path}: {exc}") from exc
        self._fresh, self._quiet = {}, {}
        self._last = ("", {})

    def _write(self, keep: set[str] | None) -> None:
        fresh, quiet = self._fresh, self._quiet
        learnt = fresh or quiet or self._quiet_reset or self._stamp is not None
        if not learnt and keep is None:
            return
        if not learnt and not (self.path.exists() or self.path.is_symlink()):
            return  # nothing learnt, nothing to drop
        db = self._writer()
        stamp = self._stamp if keep is not None else None  # written at `save`, the last
        changes = [*_cert_changes(db, fresh, keep),
                   *_quiet_changes(db, quiet, keep, self._quiet_reset, stamp)]  # fmt: skip
        if changes:  # else nothing new: a no-op run writes nothing
            with _transaction(db):
                for sql, args in changes:
                    db.executemany(sql, args)
            self._quiet_reset = False
        if keep is not None:
            for old in OLD_FILES:
                _remove(self.path.with_name(old))

    def _writer(self) -> sqlite3.Connection:
        """The connection, read-write (the file made with our mode and layout)."""
        if self._db is not None and self._opened == "rw":
            return self._db
        self.close()  # a read-only one, or none yet
        db = _create(self.path, self._writing)
        if not _ours(db):  # another version or layout: made again, empty
            db.close()
            _remove(self.path)
            db = _create(self.path, self._writing)
            with _transaction(db):
                for schema in _SCHEMAS.values():
                    db.execute(schema)
                db.execute(f"PRAGMA user_version = {VERSION}")
        self._db, self._opened = db, "rw"
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db, self._opened = None, ""


def _create(path: Path, writing: tuple[int, int | None] | None) -> sqlite3.Connection:
    """The file made (or kept) with our mode and group, never through a link."""
    mode, group = writing or (0o600, None)
    if path.is_symlink() or (path.exists() and not _regular(path)):
        _remove(path)  # not ours to follow
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return sqlite3.connect(path, timeout=BUSY, isolation_level=None, check_same_thread=False)


Changes = list[tuple[str, list[tuple[object, ...]]]]
_QUIET_SELECT = ("SELECT name, until, sig, reason, renew_at, release, not_after, last_outcome, "
                 "ca, fallback FROM quiet WHERE name IN ")


def _cert_changes(
    db: sqlite3.Connection, fresh: dict[str, dict[str, Any]], keep: set[str] | None
) -> Changes:
    """The rows of certificates not kept dropped; what was read anew merged in."""
    gone: list[tuple[object, ...]] = [] if keep is None else \
        [(n,) for (n,) in db.execute("SELECT name FROM certs") if n not in keep]  # fmt: skip
    rows: list[tuple[object, ...]] = []
    for n, parts in fresh.items():
        if keep is not None and n not in keep:
            continue
        row = db.execute("SELECT entry FROM certs WHERE name = ?", (n,)).fetchone()
        text = json.dumps({**_decode(row[0] if row else None), **parts}, separators=(",", ":"))
        if row is None or row[0] != text:
            rows.append((n, text))
    put = "INSERT OR REPLACE INTO certs (name, entry) VALUES (?, ?)"
    return [(sql, args) for sql, args in (("DELETE FROM certs WHERE name = ?", gone),
                                          (put, rows)) if args]  # fmt: skip


def _quiet_changes(
    db: sqlite3.Connection,
    quiet: dict[str, QuietEntry | None],
    keep: set[str] | None,
    reset: bool,
    stamp: str | None,
) -> Changes:
    """The no-op cache: every row dropped first (`reset`), those of certificates not
    kept or read again dropped, this run's written, and the stamp when it is new."""
    out: Changes = [("DELETE FROM quiet", [()])] if reset else []
    gone: list[tuple[object, ...]] = [(n,) for n, row in quiet.items() if row is None]
    if keep is not None and not reset:
        gone += [(n,) for (n,) in db.execute("SELECT name FROM quiet")
                 if n not in keep and n not in quiet]  # fmt: skip
    rows: list[tuple[object, ...]] = [(n, *row) for n, row in quiet.items()
                                      if row is not None and (keep is None or n in keep)]
    put = "INSERT OR REPLACE INTO quiet VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    out += [(sql, args) for sql, args in (("DELETE FROM quiet WHERE name = ?", gone),
                                          (put, rows)) if args]  # fmt: skip
    row = db.execute("SELECT value FROM meta WHERE key = 'quiet'").fetchone()
    if stamp is not None and (row is None or row[0] != stamp):
        out.append(("INSERT OR REPLACE INTO meta (key, value) VALUES ('quiet', ?)", [(stamp,)]))
    return out


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction (the connection is in autocommit mode, where `with db:` would
    leave every statement its own, each with its own journal and fsyncs)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _open(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to an index of this version, or None (none, a link,
    another version, unreadable: the files are read instead)."""
    if not _regular(path):
        return None
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=BUSY, isolation_level=None,
                             check_same_thread=False)  # fmt: skip
    except (sqlite3.Error, OSError, ValueError):
        return None
    try:
        if _ours(db):
            return db
    except sqlite3.Error:
        pass
    db.close()
    return None


def _ours(db: sqlite3.Connection) -> bool:
    """This version's layout (sqlite3.Error when the file is not a database)."""
    if db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
        return False
    rows = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
    return dict(rows.fetchall()) == _SCHEMAS



def aware(text: object) -> dt.datetime | None:
    """An ISO time with its zone, or None (anything else a file may hold)."""
    try:
        at = dt.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return at if at is not None and at.tzinfo is not None else None


def _decode(text: object) -> dict[str, Any]:
    """An entry's JSON text as a mapping; anything else is no entry."""
    try:
        entry = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
