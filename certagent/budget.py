"""The order budget of one ACME account: at most `ca.max_new_orders` new orders in any
`ca.new_orders_window` (default 300 in 3 hours, Let's Encrypt's published "New Orders
per Account" limit). A certificate that would exceed it is not ordered in this run but
deferred (SKIPPED, said in the report) to the run after a slot frees: a node with
thousands of certificates due at once spreads them itself, without coordination,
instead of meeting the CA's 429s.

The orders sent are remembered in `<state_dir>/accounts/<ca>/orders.json` (times only),
so the budget holds across runs. The duplicate ledger (certificates per set of names)
sits beside it. Side effects: those files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from . import layout
from .store import atomic_write

log = logging.getLogger(__name__)

BUDGET_FILE = layout.ORDERS


class OrderBudget:
    def __init__(self, folder: Path, limit: int, window: float) -> None:
        self.path = folder / BUDGET_FILE
        self.limit = limit
        self.window = dt.timedelta(seconds=window)
        self._sent: list[dt.datetime] | None = None
        self._lock = threading.Lock()

    def _load(self) -> list[dt.datetime]:
        if self._sent is None:
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                sent = [dt.datetime.fromisoformat(x) for x in raw if isinstance(x, str)]
                self._sent = sorted(t for t in sent if t.tzinfo is not None)
            except (OSError, ValueError, TypeError):
                self._sent = []  # unreadable: start afresh (the CA still has its own limit)
        return self._sent

    def take(self, now: dt.datetime) -> dt.datetime | None:
        """Spend one order now: None when it may be sent, else when a slot frees."""
        with self._lock:
            sent = [t for t in self._load() if now - self.window < t <= now + self.window]
            if len(sent) >= self.limit:
                self._sent = sent
                return sent[len(sent) - self.limit] + self.window
            sent.append(now)
            self._sent = sent
            data = json.dumps([t.isoformat() for t in sent[-self.limit :]]).encode()
            try:
                atomic_write(self.path, data, 0o600)
            except OSError as exc:  # a full disk: the order's own checks say it better
                log.warning("cannot record the order in %s: %s", self.path, exc.strerror or exc)
            return None


DUPLICATES_FILE = layout.DUPLICATES


class DuplicateLedger:
    """Certificates issued by one CA per set of names (Let's Encrypt's "Duplicate
    Certificate" limit: 5 for the same names in 7 days). Known before ordering, so an
    order that the CA would refuse is not sent: kept in `<account>/duplicates.json` as
    (SHA-256 of the sorted names, time) pairs within the window."""

    def __init__(self, folder: Path, limit: int, window: float, enforce: bool = True) -> None:
        self.path = folder / DUPLICATES_FILE
        self.enforce = enforce  # False: `renew --allow-duplicate` (still recorded)
        self.limit = limit
        self.window = dt.timedelta(seconds=window)
        self._issued: list[tuple[str, dt.datetime]] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def key(names: Sequence[str]) -> str:
        joined = "\n".join(sorted({n.lower() for n in names}))
        return hashlib.sha256(joined.encode()).hexdigest()[:32]

    def _load(self) -> list[tuple[str, dt.datetime]]:
        if self._issued is None:
            out = []
            try:
                for item in json.loads(self.path.read_text(encoding="utf-8")):
                    when = dt.datetime.fromisoformat(item[1])
                    if when.tzinfo is not None:
                        out.append((str(item[0]), when))
            except (OSError, ValueError, TypeError, IndexError, KeyError):
                pass  # unreadable or absent: start afresh (the CA still counts)
            self._issued = out
        return self._issued

    def next_allowed(self, names: Sequence[str], now: dt.datetime) -> dt.datetime | None:
        """None when one more certificate for `names` stays within the limit, else when."""
        key = self.key(names)
        with self._lock:
            times = sorted(t for k, t in self._load() if k == key and now - self.window < t)
        if len(times) < self.limit:
            return None
        return times[len(times) - self.limit] + self.window

    def record(self, names: Sequence[str], now: dt.datetime) -> None:
        with self._lock:
            kept = [(k, t) for k, t in self._load() if now - self.window < t <= now]
            kept.append((self.key(names), now))
            self._issued = kept
            data = json.dumps([[k, t.isoformat()] for k, t in kept]).encode()
            try:
                atomic_write(self.path, data, 0o600)
            except OSError as exc:  # the certificate is what matters; the CA still counts
                log.warning("cannot record the issuance in %s: %s", self.path, exc.strerror or exc)
