"""A certificate's state (`CertState`) as the JSON of its state.json, described once:
one table names each field with how it is read and written, so a new field is one line
here. Nothing read is trusted: every field is checked, and a value of the wrong shape
is a ValueError naming it.

Side effects: none.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from ..model import CertState, RenewalWindow

Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]  # (read, write)


def aware(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected a time, got {type(value).__name__}")
    when = dt.datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError(f"time without a time zone: {value}")
    return when


def opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _opt_time(value: Any) -> dt.datetime | None:
    return aware(value) if value else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _count(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    raise ValueError(f"expected a count, got {value!r:.40}")


def _opt_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"expected true, false or null, got {type(value).__name__}")


def _pair(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    first, second = value
    return str(first), str(second)


def _pending(value: Any) -> tuple[str, str | None] | None:
    if value is None:
        return None
    new, old = value  # a pair: [new release, release it replaced]
    pending = (opt_str(new) or "", opt_str(old))
    if not pending[0]:
        raise ValueError("pending without a release")
    return pending


def _list(value: tuple[Any, ...] | None) -> list[Any] | None:
    return list(value) if value else None


def _window(raw: Any) -> RenewalWindow | None:
    if not raw:
        return None
    url = raw.get("explanation_url")
    return RenewalWindow(aware(raw["start"]), aware(raw["end"]),
                         url if isinstance(url, str) else None,
                         _opt_time(raw.get("next_check")))  # fmt: skip


def _window_json(window: RenewalWindow | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"start": window.start.isoformat(), "end": window.end.isoformat(),
            "explanation_url": window.explanation_url,
            "next_check": _iso(window.next_check)}  # fmt: skip


def _same(value: Any) -> Any:
    return value


TEXT: Codec = (opt_str, _same)
TIME: Codec = (_opt_time, _iso)
COUNT: Codec = (_count, _same)

FIELDS: dict[str, Codec] = {
    "last_outcome": TEXT,
    "last_attempt": TIME,
    "consecutive_failures": COUNT,
    "window": (_window, _window_json),
    "pending": (_pending, _list),
    "failed_release": TEXT,
    "previous_release": TEXT,
    "last_success": TIME,
    "attempts": COUNT,
    "failures": COUNT,
    "refusals": COUNT,
    "verify_ok": (_opt_bool, _same),
    "retry_after": TIME,
    "revoked": (_pair, _list),
    "ari_next": TIME,
    "last_error": TEXT,
}
assert set(FIELDS) == {f.name for f in dataclasses.fields(CertState)}  # noqa: S101 - one table

def decode(raw: dict[str, Any]) -> CertState:
    """A CertState from state.json's object; ValueError (or KeyError, TypeError) when a
    field has the wrong shape. A missing (or null) field keeps its default."""
    values: dict[str, Any] = {}
    for name, (read, _) in FIELDS.items():
        if raw.get(name) is not None:
            values[name] = read(raw[name])
    return CertState(**values)


def encode(state: CertState) -> dict[str, Any]:
    return {name: write(getattr(state, name)) for name, (_, write) in FIELDS.items()}
