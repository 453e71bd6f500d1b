"""The audit log: history.jsonl, append-only, one JSON object per run, read backwards
so that the cost grows with the records read, not with the length of the history.

Side effects: filesystem (appends with fsync; never follows a link).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import StoreError


class History:
    def __init__(self, root: Path, group: int | None = None, mode: int = 0o600) -> None:
        self.path = root / layout.HISTORY
        self.group = group
        self.mode = mode

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.path, flags, 0o600)
        try:
            if self.group is not None:
                os.fchown(fd, -1, self.group)
                os.fchmod(fd, self.mode)
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def backwards(self, chunk: int = 65536) -> Iterator[dict[str, Any]]:
        """Records, newest first, read backwards from the end of the file."""
        try:
            f = os.fdopen(os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from exc
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


def _record(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None  # a torn last line (a crash mid-append) is not a run record
    return record if isinstance(record, dict) else None
