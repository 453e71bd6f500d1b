"""What one CA said that holds across runs, beside its account (accounts/<ca-id>/):

    hold.json      its Retry-After for every client (a 429/503 on the directory, a nonce
                   or the account, or a 503 anywhere): nothing is sent to it before then
    breaker.json   the circuit breaker is open: the last run met repeated 5xx answers or
                   no answer at all, so the next run sends one request as a probe first
    no-ari.json    its directory offers no renewal information (RFC 9773): no certificate
                   asks it for a window until the day is over (learnt once per CA, not
                   once per certificate)

Read by the ACME adapter before it sends anything, and by `plan` and `status` (which
import no ACME library) to say why nothing goes out. Side effects: those two files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path

from . import layout
from .store import atomic_write

HOLD_FILE = layout.HOLD
BREAKER_FILE = layout.BREAKER
MAX_HOLD = dt.timedelta(days=7)  # a Retry-After beyond this is a CA's mistake: capped


def read_hold(folder: Path, now: dt.datetime) -> tuple[dt.datetime, str] | None:
    """(until, why) while the CA's CA-wide Retry-After holds, else None."""
    try:
        raw = json.loads((folder / HOLD_FILE).read_text(encoding="utf-8"))
        until = dt.datetime.fromisoformat(raw["until"])
        why = str(raw.get("why", ""))[:300]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if until.tzinfo is None or now >= until:
        return None
    until = min(until, now + MAX_HOLD)
    said = f" ({why})" if why else ""
    return until, f"the CA asked every client to wait until {until:%Y-%m-%d %H:%M:%S} UTC{said}"


def write_hold(folder: Path, until: dt.datetime, why: str) -> None:
    """Remember a CA-wide Retry-After; a later one never shortens an earlier one."""
    old = read_hold(folder, dt.datetime.now(dt.UTC))
    if old is not None and old[0] >= until:
        return
    record = {"until": until.isoformat(), "why": why[:300]}
    atomic_write(folder / HOLD_FILE, json.dumps(record).encode(), 0o600)


def breaker_open(folder: Path) -> str | None:
    """Why the breaker is open (the last run's outage), or None when it is closed."""
    try:
        raw = json.loads((folder / BREAKER_FILE).read_text(encoding="utf-8"))
        return str(raw.get("why", "an earlier run found the CA unavailable"))[:300]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError):
        return "an earlier run found the CA unavailable"


def open_breaker(folder: Path, when: dt.datetime, why: str) -> None:
    record = {"since": when.isoformat(), "why": why[:300]}
    atomic_write(folder / BREAKER_FILE, json.dumps(record).encode(), 0o600)


def close_breaker(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / BREAKER_FILE).unlink()


NO_ARI_FOR = dt.timedelta(days=1)  # how long "no renewal information here" is believed


def ari_absent(folder: Path, now: dt.datetime) -> bool:
    """Whether the CA's directory was seen without renewal information, lately."""
    return ari_absent_until(folder, now) is not None


def ari_absent_until(folder: Path, now: dt.datetime) -> dt.datetime | None:
    """Until when the CA's directory is taken to offer no renewal information (it was
    seen without), or None."""
    try:
        raw = json.loads((folder / layout.NO_ARI).read_text(encoding="utf-8"))
        until = dt.datetime.fromisoformat(raw["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return until if until.tzinfo is not None and now < until else None


def note_ari(folder: Path, offered: bool, now: dt.datetime) -> None:
    """Remember what the directory said about renewal information (best effort)."""
    path = folder / layout.NO_ARI
    if offered:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif not ari_absent(folder, now):
        atomic_write(path, json.dumps({"until": (now + NO_ARI_FOR).isoformat()}).encode(), 0o600)
