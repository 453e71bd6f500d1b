"""The order budget of one ACME account: at most `ca.max_new_orders` new orders in any
`ca.new_orders_window` (default 300 in 3 hours, Let's Encrypt's published "New Orders
per Account" limit). A certificate that would exceed it is not ordered in this run but
deferred (SKIPPED, said in the report) to the run after a slot frees: a node with
thousands of certificates due at once spreads them itself, without coordination,
instead of meeting the CA's 429s.

The orders sent are remembered in `<state_dir>/accounts/<ca>/orders.jsonl` (times
only), so the budget holds across runs. The duplicate ledger (certificates per set of
names) sits beside it. Both are append-only, a line an event: an order costs one
appended line whatever the count (rewriting the whole file per order made a run of
10,000 orders quadratic); each is read once a run and rewritten only when it holds
lines that expired, a torn last line (a killed append) or is in the earlier one-array
form. Side effects: those files.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import layout
from .index import aware
from .store import append_line, atomic_write
from .store.atomic import read_plain

log = logging.getLogger(__name__)

BUDGET_FILE = layout.ORDERS
MAX_LEDGER = 64 << 20  # a ledger holds a window's events: ~60 bytes each
T = TypeVar("T")


class _Ledger:
    """One append-only file of JSON lines (`legacy`: the same entries as one JSON array,
    read when the file is absent and removed once they are rewritten as lines)."""

    def __init__(self, path: Path, legacy: Path) -> None:
        self.path, self.legacy = path, legacy

    def read(self, parse: Callable[[Any], T | None]) -> list[T]:
        """The entries `parse` accepts, parsed (of both files, when an earlier build
        left its own beside). What cannot be read is left out with a warning: the CA
        still has its own limit. The file is rewritten with exactly those when it held
        others (expired, unreadable, torn) or the earlier file had some, which then goes."""
        entries: list[Any] = []
        clean = True  # the file holds exactly its entries, as whole lines
        for path in (self.path, self.legacy):
            try:
                data = _read(path)
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s; starting it afresh", path, _why(exc))
                data, clean = b"", False  # a link or junk in its place: replaced, not followed
            if data is None:
                continue
            if path == self.legacy:
                clean = False
                entries += _array(data)
            else:
                lines = data.split(b"\n")
                clean = clean and lines.pop() == b""  # else a torn last line: dropped
                found = _parsed(lines)
                clean = clean and len(found) == len(lines)  # else lines that are not JSON
                entries += found
        kept = [(e, p) for e in entries if (p := parse(e)) is not None]
        if (not clean or len(kept) != len(entries)) and self._rewrite([e for e, _ in kept]):
            with contextlib.suppress(OSError):
                self.legacy.unlink()
        return [p for _, p in kept]

    def append(self, entry: Any) -> None:
        append_line(self.path, _line(entry))

    def _rewrite(self, entries: list[Any]) -> bool:
        try:
            atomic_write(self.path, b"".join(_line(e) for e in entries), 0o600)
        except OSError as exc:  # appending may still work; the CA keeps its own count
            log.warning("cannot rewrite %s: %s", self.path, _why(exc))
            return False
        return True


def _parsed(lines: list[bytes]) -> list[Any]:
    entries = []
    for line in lines:
        with contextlib.suppress(ValueError, RecursionError):  # RecursionError: [[[[...
            entries.append(json.loads(line))
    return entries


def _array(data: bytes) -> list[Any]:
    """The entries of an earlier build's one-array file."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return []
    return raw if isinstance(raw, list) else []


def _read(path: Path) -> bytes | None:
    """A ledger's bytes, None when it is absent; OSError or ValueError when it cannot
    be read (a link, not a plain file, an I/O error, too large)."""
    try:
        return read_plain(path, MAX_LEDGER)
    except FileNotFoundError:
        return None


def _why(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def _line(entry: Any) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


class OrderBudget:
    def __init__(self, folder: Path, limit: int, window: float) -> None:
        self.path = folder / BUDGET_FILE
        self.limit = limit
        self.window = dt.timedelta(seconds=window)
        self._ledger = _Ledger(self.path, folder / layout.LEGACY_ORDERS)
        self._sent: list[dt.datetime] | None = None  # sorted
        self._lock = threading.Lock()

    def _load(self, now: dt.datetime) -> list[dt.datetime]:
        if self._sent is None:

            def current(entry: Any) -> dt.datetime | None:
                when = aware(entry)
                if when is None or not now - self.window < when <= now + self.window:
                    return None
                return when

            self._sent = sorted(self._ledger.read(current))
        return self._sent

    def take(self, now: dt.datetime) -> dt.datetime | None:
        """Spend one order now: None when it may be sent, else when a slot frees."""
        with self._lock:
            sent = self._load(now)
            low = bisect.bisect_right(sent, now - self.window)
            high = bisect.bisect_right(sent, now + self.window)
            if high - low >= self.limit:
                return sent[high - self.limit] + self.window
            bisect.insort(sent, now)
            try:
                self._ledger.append(now.isoformat())
            except OSError as exc:  # a full disk: the order's own checks say it better
                log.warning("cannot record the order in %s: %s", self.path, exc.strerror or exc)
            return None


DUPLICATES_FILE = layout.DUPLICATES


class DuplicateLedger:
    """Certificates issued by one CA per set of names (Let's Encrypt's "Duplicate
    Certificate" limit: 5 for the same names in 7 days). Known before ordering, so an
    order that the CA would refuse is not sent: kept in `<account>/duplicates.jsonl` as
    (SHA-256 of the sorted names, time) pairs within the window."""

    def __init__(self, folder: Path, limit: int, window: float, enforce: bool = True) -> None:
        self.path = folder / DUPLICATES_FILE
        self.enforce = enforce  # False: `renew --allow-duplicate` (still recorded)
        self.limit = limit
        self.window = dt.timedelta(seconds=window)
        self._ledger = _Ledger(self.path, folder / layout.LEGACY_DUPLICATES)
        self._issued: dict[str, list[dt.datetime]] | None = None  # by key, sorted
        self._lock = threading.Lock()

    @staticmethod
    def key(names: Sequence[str]) -> str:
        joined = "\n".join(sorted({n.lower() for n in names}))
        return hashlib.sha256(joined.encode()).hexdigest()[:32]

    def _load(self, now: dt.datetime) -> dict[str, list[dt.datetime]]:
        if self._issued is None:

            def current(entry: Any) -> tuple[str, dt.datetime] | None:
                """A (names' key, time) pair within the window (or ahead of the clock:
                the CA counted it when it happened, so it still counts)."""
                if not isinstance(entry, list) or len(entry) != 2:
                    return None
                key, when = entry[0], aware(entry[1])
                if not isinstance(key, str) or when is None or when <= now - self.window:
                    return None
                return key, when

            issued: dict[str, list[dt.datetime]] = {}
            for key, when in self._ledger.read(current):
                issued.setdefault(key, []).append(when)
            for times in issued.values():
                times.sort()
            self._issued = issued
        return self._issued

    def next_allowed(self, names: Sequence[str], now: dt.datetime) -> dt.datetime | None:
        """None when one more certificate for `names` stays within the limit, else when."""
        with self._lock:
            times = self._load(now).get(self.key(names), [])
            times = times[bisect.bisect_right(times, now - self.window) :]
        if len(times) < self.limit:
            return None
        return times[len(times) - self.limit] + self.window

    def record(self, names: Sequence[str], now: dt.datetime) -> None:
        key = self.key(names)
        with self._lock:
            bisect.insort(self._load(now).setdefault(key, []), now)
            try:
                self._ledger.append([key, now.isoformat()])
            except OSError as exc:  # the certificate is what matters; the CA still counts
                log.warning("cannot record the issuance in %s: %s", self.path, exc.strerror or exc)
