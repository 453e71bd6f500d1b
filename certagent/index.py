"""One small file that spares a no-op run, `plan` and `status` the reading and hashing
of every certificate's files (issue #16): `<state_dir>/index.json`.

It is a cache, never the truth. For each certificate it keeps what was last read of
`state.json` and of the live release's `meta.json`, each with the file's signature
(size, mtime, ctime, inode), and the signatures of the key and certificates when their
SHA-256 last matched. A value is used only while its file's signature is unchanged: any
write, rename or chmod changes the ctime, which no one can set back. Digests are
checked again at least once a day whatever the signatures say. A missing, unreadable or
foreign index is ignored and rebuilt by the next `renew` (which alone writes it, under
the lock); readers (`status`, `plan`, a monitoring user) only read it.

Side effects: reads the index and stats files; `save` writes the index.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

INDEX_FILE = "index.json"
VERSION = 2  # each certificate's entry a JSON string, decoded when asked for
REVERIFY = dt.timedelta(hours=24)  # digests are hashed again at least this often
MAX_INDEX = 64 << 20

Sig = list[int]


def signature(path: str) -> Sig | None:
    """What changes when a file's content, name or mode does (ctime cannot be set)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Index:
    """The entries stay JSON text until a certificate's is asked for, and are decoded
    then and let go: 10,000 certificates cost their text, not 300,000 small objects."""

    def __init__(self, root: Path) -> None:
        self.path = root / INDEX_FILE
        self._entries: dict[str, str] | None = None
        self._fresh: dict[str, dict[str, Any]] = {}  # what this run read anew
        self._lock = threading.Lock()
        # the entry decoded last (state, meta and digests are asked for in a row): one
        # tuple, replaced whole, so threads never see a name with another's entry
        self._last: tuple[str, dict[str, Any]] = ("", {})

    def _all(self) -> dict[str, str]:
        if self._entries is None:
            self._entries = _load(self.path)
        return self._entries

    def _entry(self, name: str) -> dict[str, Any]:
        last = self._last
        if last[0] == name and name:
            return last[1]
        text = self._all().get(name)
        if not isinstance(text, str):
            return {}
        try:
            entry = json.loads(text)
        except ValueError:
            return {}
        if not isinstance(entry, dict):
            return {}
        self._last = (name, entry)
        return entry

    def _note(self, name: str, **parts: Any) -> None:
        with self._lock:
            self._fresh.setdefault(name, {}).update(parts)

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

    def matched(self, name: str, release_id: str, paths: list[str], now: dt.datetime) -> None:
        """The release's digests matched just now."""
        sigs = [signature(p) for p in paths]
        if None not in sigs:
            self._note(name, verified={"release": release_id, "sigs": sigs, "at": now.isoformat()})

    # -- writing ------------------------------------------------------------------------

    def save(self, names: list[str], write: Any) -> None:
        """Write what this run read of `names` (the certificates configured now), with
        `write(path, bytes)` (the store's atomic write)."""
        with self._lock:
            fresh = dict(self._fresh)
        old = self._all()
        certs: dict[str, str] = {}
        for n in names:
            if n in fresh:
                certs[n] = json.dumps({**self._entry(n), **fresh[n]}, separators=(",", ":"))
            elif n in old:
                certs[n] = old[n]  # unchanged: its text as it was
        if certs == old:
            return  # nothing new: a no-op run writes nothing
        data = json.dumps({"version": VERSION, "certificates": certs}, separators=(",", ":"))
        write(self.path, data.encode())
        self._entries = certs
        self._fresh = {}
        self._last = ("", {})


def _load(path: Path) -> dict[str, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_INDEX + 1)
        raw = json.loads(data) if len(data) <= MAX_INDEX else None
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        return {}
    certs = raw.get("certificates")
    if not isinstance(certs, dict):
        return {}
    return {k: v for k, v in certs.items() if isinstance(v, str)}
