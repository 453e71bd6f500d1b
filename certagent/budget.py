"""The order budget of one ACME account: at most `ca.max_new_orders` new orders in any
`ca.new_orders_window` (default 300 in 3 hours, Let's Encrypt's published "New Orders
per Account" limit). A certificate that would exceed it is not ordered in this run but
deferred (SKIPPED, said in the report) to the run after a slot frees: a node with
thousands of certificates due at once spreads them itself, without coordination,
instead of meeting the CA's 429s.

The orders sent are remembered in `<state_dir>/accounts/<ca>/orders.json` (times only),
so the budget holds across runs. Side effects: that file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path

from .store import atomic_write

log = logging.getLogger(__name__)

BUDGET_FILE = "orders.json"


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
