"""The dns-01 records added and not yet removed (`<state_dir>/dns-records.json`): a
run killed between adding and removing them leaves them listed, and the next removes
them.

Side effects: the journal file.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from ..store import atomic_write
from .query import Record

log = logging.getLogger(__name__)

JOURNAL = "dns-records.json"


class Journal:
    """The records added and not yet removed (`<state_dir>/dns-records.json`)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / JOURNAL if folder is not None else None
        self.lock = threading.Lock()  # concurrent orders share it

    def read(self) -> list[dict[str, Any]]:
        if self.path is None:
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []

    def add(self, source: str, records: list[Record]) -> None:
        with self.lock:
            entries = self.read() + [
                {"source": source, "fqdn": r.fqdn, "zone": r.zone, "value": r.value,
                 "domain": r.domain} for r in records]  # fmt: skip
            self._write(entries)

    def drop(self, source: str, records: list[Record] | None) -> None:
        """Forget `records` of `source` (all of them with None)."""
        gone = {(r.fqdn, r.value) for r in records or []}
        with self.lock:
            kept = []
            for e in self.read():
                ours = e.get("source") == source
                if not ours or (
                    records is not None and (e.get("fqdn"), e.get("value")) not in gone
                ):
                    kept.append(e)
            self._write(kept)

    def _write(self, entries: list[dict[str, Any]]) -> None:
        if self.path is not None:
            atomic_write(self.path, json.dumps(entries, indent=1).encode(), 0o600)
