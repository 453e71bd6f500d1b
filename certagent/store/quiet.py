"""The no-op cache (issue #28): a `renew` that finds nothing to do for a certificate
keeps, in the index, what it decided and until when that holds; the next `renew`
believes it after a readlink and four `stat` calls instead of reading the
certificate again.

A row is believed only when all of these hold:

- the lock file holds the token that the run which wrote the rows left there as it
  ended (lock.py): no run that may have changed the store came in between, a killed
  one included (whoever takes the lock writes its PID over the token);
- the configuration is the same files, unchanged (`Config.inputs`: their size, mtime,
  ctime and inode, taken from the descriptor each was read from), read by the same
  user with the same certagent (the index's stamp names them);
- the live release (the folder `current` points at, its key and its certificate) and
  the certificate's `state.json` have the signatures they had: a relink, a file
  written, renamed or removed in the release folder, an edit in place of the key or
  the certificate, any write of the state is seen at once. An edit in place of the
  chain, fullchain or bundle (which leaves the folder as it was) is found by the
  re-hash of the release's digests that is due at least daily (index.REVERIFY);
- it is still before the row's `until`: the first moment at which the decision could
  change (the renewal time, a back-off's or the CA's Retry-After's end, the time to
  ask for the renewal window again, the end of "this CA offers no renewal
  information", the expiry), and at the latest when that re-hash is due (a row that
  holds for longer than that from now was written before the clock was set back).

Anything else (`--force`, `--new-order`, a configuration read from text, an index
that cannot be read) reads every certificate; what it finds quiet is kept again.

Side effects: reads the index and stats four paths per certificate; `end` writes the
token into the held lock file.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import layout
from ..index import REVERIFY, Index, aware
from .lock import Held, left


@dataclass(frozen=True)
class QuietRow:
    """What the last run decided for a certificate with nothing to do."""

    reason: str
    renew_at: dt.datetime | None
    release: str | None
    not_after: dt.datetime | None
    last_outcome: str | None = None  # the state's, for `status`
    ca: str | None = None  # the CA that issued the live release
    fallback: str | None = None  # what `status` says when that is a fallback CA


def _sig(path: str) -> str:
    st = os.stat(path, follow_symlinks=False)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


_REVERIFY_MICROS = int(REVERIFY.total_seconds() * 1_000_000)
BATCH = 256  # rows read in one query


def _micros(at: dt.datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _iso(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


class Quiet:
    """The cache of one store, for one `renew` under its lock: `begin`, then `lookup`
    and `keep` per certificate, then `end` once the index is saved."""

    def __init__(self, index: Index, dir_of: Callable[[str], str], root: Path) -> None:
        self._index = index
        self._root = root
        self._dir_of = dir_of
        self.held: Held | None = None  # set by Store.lock while the lock is held
        self._token: str | None = None  # None: not begun (nothing kept, nothing believed)
        self._believed = False
        self._stale: set[str] = set()  # rows found and not believed: dropped unless kept
        self._names: list[str] = []  # in the order they are looked up: read BATCH at a time
        self._at: dict[str, int] = {}
        self._batch: dict[str, tuple[Any, ...]] = {}
        self._batched: frozenset[str] = frozenset()

    def begin(self, inputs: str, names: list[str]) -> None:
        """A renew starts (the lock held): believe the rows if the previous holder of
        the lock left the token the index's stamp names, for these same inputs. `names`:
        the certificates, in the order they will be looked up."""
        self._names = names
        held = self.held
        if held is None or not inputs:
            return
        token = held.token()
        if token is not None and self._index.stamp() == f"{token} {inputs}":
            self._token, self._believed = token, True
            return
        self._token, self._believed = os.urandom(16).hex(), False
        self._index.restart_quiet(f"{self._token} {inputs}")

    @property
    def active(self) -> bool:
        """Begun: what this run finds is kept."""
        return self._token is not None

    def begin_reading(self, inputs: str, names: list[str]) -> None:
        """`status` and `plan` (no lock): believe the rows as `begin` would, from the
        token the lock file holds now. Nothing is kept or dropped."""
        self._names = names
        token = left(self._root)
        if inputs and token is not None and self._index.stamp() == f"{token} {inputs}":
            self._believed = True

    def lookup(self, name: str, now: dt.datetime) -> QuietRow | None:
        """The row of a certificate that still has nothing to do, or None."""
        if not self._believed:
            return None
        row = self._row(name)
        if row is None:
            return None
        until, sig, reason, renew_at, release, not_after, outcome, ca, fallback = row
        at = _micros(now)
        if (
            not isinstance(until, int)
            or not at < until <= at + _REVERIFY_MICROS  # else the clock went back since
            or not isinstance(reason, str)
            or not all(isinstance(v, str | None) for v in (renew_at, release, not_after,
                                                            outcome, ca, fallback))
            or sig != self._sigs(name)
        ):
            self._stale.add(name)
            return None
        return QuietRow(reason, aware(renew_at), release, aware(not_after), outcome, ca,
                        fallback)  # fmt: skip

    def keep(self, name: str, row: QuietRow | None, until: dt.datetime | None = None) -> None:
        """What this run found: a certificate with nothing to do until `until`, or
        (None) one whose row is dropped. Taken before anything of it was written."""
        if self._token is None or (row is None and name not in self._stale):
            return  # not begun; or there is no row to drop (all are, when not believed)
        sig = self._sigs(name)
        if row is None or until is None or sig is None:
            self._index.keep_quiet(name, None)
            return
        verified = self._index.verified_at(name)
        latest = (verified or dt.datetime.now(dt.UTC)) + REVERIFY
        self._index.keep_quiet(name, (_micros(min(until, latest)), sig, row.reason,
                                      _iso(row.renew_at), row.release, _iso(row.not_after),
                                      row.last_outcome, row.ca, row.fallback))  # fmt: skip

    def end(self) -> None:
        """The index is saved with this run's rows: leave the token for the next run."""
        if self._token is not None and self.held is not None:
            self.held.leave(self._token)
        self._token, self._believed, self._stale = None, False, set()
        self._names, self._at, self._batch, self._batched = [], {}, {}, frozenset()

    def _row(self, name: str) -> tuple[Any, ...] | None:
        """The row, read with the next BATCH names' (one query, not one each; memory
        bounded by BATCH whatever the number of certificates)."""
        if name not in self._batched:
            if not self._at:
                self._at = {n: i for i, n in enumerate(self._names)}
            i = self._at.get(name)
            names = [name] if i is None else self._names[i : i + BATCH]
            self._batch, self._batched = self._index.quiet(names), frozenset(names)
        return self._batch.get(name)

    def _sigs(self, name: str) -> str | None:
        """The live release folder, its key and certificate, and the state file, as
        they are now (None: one is missing)."""
        folder = self._dir_of(name)
        try:
            release = os.path.join(folder, os.readlink(f"{folder}/{layout.CURRENT}"))
            paths = (release, f"{release}/{layout.KEY}", f"{release}/{layout.CERT}",
                     f"{folder}/{layout.STATE}")  # fmt: skip
            return "|".join(_sig(p) for p in paths)
        except OSError:
            return None
