"""The audit log: history.jsonl, append-only, one JSON object per run, read backwards
so that the cost grows with the records read, not with the length of the history.
It does not grow without end: an append that finds it at MAX_BYTES first moves it to
history.jsonl.1 (replacing the generation before), so the log takes at most twice
that; readers go on into the older generation. (A no-op run over 10,000 certificates
records each one's decision: about 1.3 MB.)
Beside it, last-runs.json says when each command last ran and how it ended, so that
metrics and `check` need not parse a record of 10,000 certificates to learn it (built
from the history once, at the first append that finds it missing).

Side effects: filesystem (appends with fsync; never follows a link).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import StoreError
from ..jsontext import lazy_object, write_compact
from .atomic import append_line, atomic_write, fsync_dir, read_json

log = logging.getLogger(__name__)

LOOKBACK = 500  # records read backwards to build last-runs.json the first time
MAX_BYTES = 32 * 1024 * 1024  # history.jsonl is moved to history.jsonl.1 at this size
LAZY_BYTES = 256 * 1024  # a longer record's certificates are decoded as they are walked


class History:
    def __init__(
        self, root: Path, group: int | None = None, mode: int = 0o600, max_bytes: int = MAX_BYTES
    ) -> None:
        self.path = root / layout.HISTORY
        self.group = group
        self.mode = mode
        self.max_bytes = max_bytes

    @property
    def older(self) -> Path:
        """The generation before (history.jsonl.1)."""
        return self.path.with_name(f"{self.path.name}.1")

    def append(self, record: Mapping[str, Any]) -> None:
        """`record`'s values may be iterators (a run's certificates): each is a JSON
        list, encoded an entry at a time."""
        line = _line(record)
        self._rotate()
        append_line(self.path, line, self.mode, self.group)
        try:
            self._remember(record)
        except OSError:  # the record is written; a stale summary must not outlive it
            with contextlib.suppress(OSError):
                self.path.with_name(layout.LAST_RUNS).unlink()

    def _rotate(self) -> None:
        """At max_bytes, the log becomes the older generation (one rename: a kill on
        either side of it leaves every record in one file or the other)."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return
        if st.st_size >= self.max_bytes:
            os.replace(self.path, self.older)
            fsync_dir(self.path.parent)

    def _remember(self, record: Mapping[str, Any]) -> None:
        runs = self.last_runs()
        if runs is None:  # none yet (or unreadable): built from the history, once
            runs = self.scanned_runs()
        runs[str(record.get("command"))] = run_of(record)
        data = json.dumps({"version": 1, "runs": runs}, sort_keys=True).encode()
        atomic_write(self.path.with_name(layout.LAST_RUNS), data, self.mode, self.group)

    def scanned_runs(self) -> dict[str, dict[str, Any]]:
        """Each command's last run, from the newest LOOKBACK records themselves."""
        runs: dict[str, dict[str, Any]] = {}
        try:
            for i, record in enumerate(self.backwards(lazy=True)):  # their certificates unread
                if sound_run(run_of(record)):
                    runs.setdefault(str(record.get("command")), run_of(record))
                if i >= LOOKBACK:
                    break
        except StoreError as exc:  # what was read is true; the rest is not guessed
            log.warning("%s", exc)
        return runs

    def last_runs(self) -> dict[str, dict[str, Any]] | None:
        """Each command's last run ({"time", "exit_status"}), or None when the file is
        missing or unreadable (then read the history itself)."""
        try:
            raw = read_json(self.path.with_name(layout.LAST_RUNS))
        except (OSError, ValueError):
            return None
        runs = raw.get("runs")
        if raw.get("version") != 1 or not isinstance(runs, dict):
            return None
        return {str(k): v for k, v in runs.items() if sound_run(v)}

    def backwards(self, chunk: int = 65536, lazy: bool = False) -> Iterator[dict[str, Any]]:
        """Records, newest first: the log read backwards from its end, then the older
        generation. StoreError when the log cannot be read; an older generation that
        cannot be (a folder in its place, a link) is said in a warning and left out.
        `lazy`: a large record's certificates are an Items, decoded as walked (a run
        over 10,000 certificates holds 20 MB once decoded), for those who print it."""
        yield from _backwards(self.path, chunk, lazy)
        try:
            yield from _backwards(self.older, chunk, lazy)
        except StoreError as exc:
            log.warning("%s: the older records are left out", exc)


def _backwards(path: Path, chunk: int, lazy: bool) -> Iterator[dict[str, Any]]:
    try:
        f = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    with f:
        try:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise StoreError(f"cannot read {path}: not a file")
            end = f.seek(0, os.SEEK_END)
            tail: list[bytes] = []  # the start of the line being read, its last piece first
            while end > 0:
                start = max(0, end - chunk)
                f.seek(start)
                piece = f.read(end - start)
                end = start
                if start > 0 and b"\n" not in piece:  # inside a long line: kept, not split
                    tail.append(piece)
                    continue
                lines = piece.split(b"\n")
                lines[-1] += b"".join(reversed(tail))
                tail = [lines[0]] if start > 0 else []  # maybe cut: finished next round
                for i in range(len(lines) - 1, 0 if start > 0 else -1, -1):
                    line, lines[i] = lines[i], b""  # a long line's bytes go once decoded
                    record = _record(line, lazy)
                    del line
                    if record is not None:
                        yield record
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _line(record: Mapping[str, Any]) -> bytes:
    """The record as one compact line (jsontext.write_compact), joined once."""
    pieces: list[bytes] = []
    write_compact(record, lambda text: pieces.append(text.encode()))
    pieces.append(b"\n")
    return b"".join(pieces)


def run_of(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"time": record.get("time"), "exit_status": record.get("exit_status", 0)}


def sound_run(run: object) -> bool:
    """A run with a time that parses and an integer exit status (a damaged file says
    nothing rather than something wrong)."""
    if not isinstance(run, dict) or not isinstance(run.get("exit_status"), int):
        return False
    try:
        return dt.datetime.fromisoformat(str(run.get("time"))).tzinfo is not None
    except ValueError:
        return False


def _record(line: bytes, lazy: bool = False) -> dict[str, Any] | None:
    """`lazy`: a large record's certificates are left as text (jsontext.Items)."""
    if not line.strip():
        return None
    try:
        if lazy and len(line) > LAZY_BYTES:
            return lazy_object(line.decode("utf-8"), "certificates")
        record = json.loads(line)
    except ValueError:
        return None  # a torn last line (a crash mid-append) is not a run record
    return record if isinstance(record, dict) else None
