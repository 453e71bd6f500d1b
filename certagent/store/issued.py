"""Issuances kept before staging: the key and chain a CA sent, written at once (0600)
under certs/<name>/issued/ so that a stage that fails, or a kill, never costs an
issuance. The next run stages one instead of ordering again.

Side effects: filesystem.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import layout
from .atomic import atomic_write, dumps, make_private_dir, read_json


@dataclass(frozen=True)
class Issued:
    """A certificate the CA issued that is not (yet) part of a release."""

    path: Path
    key_pem: bytes
    fullchain: bytes
    ca: str
    facts: Mapping[str, Any]  # names, key_type, not_before, not_after, profile (if kept)

    @property
    def issued(self) -> dt.datetime | None:
        """When it was kept, from its file name (`<time>-<digest>.json`)."""
        return release_time(self.path.name)


def keep(
    cert_dir: Path,
    key_pem: bytes,
    fullchain: bytes,
    ca: str,
    facts: Mapping[str, Any] | None = None,
) -> Path:
    """Write an issued key and chain at once (0600). `facts` (names, key type, validity,
    profile) let plan and status describe it without parsing the certificate."""
    folder = cert_dir / layout.ISSUED
    make_private_dir(folder)
    digest = hashlib.sha256(fullchain).hexdigest()[:16]
    path = folder / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{digest}.json"
    record = {"ca": ca, "key": key_pem.decode(), "fullchain": fullchain.decode(),
              "facts": dict(facts or {})}  # fmt: skip
    atomic_write(path, dumps(record), 0o600)
    return path


def kept(cert_dir: Path) -> list[Issued]:
    """Kept issuances, newest first; unreadable ones are skipped (and kept)."""
    folder = cert_dir / layout.ISSUED
    out = []
    for path in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        try:
            raw = read_json(path)
            key, chain = str(raw["key"]).encode(), str(raw["fullchain"]).encode()
            facts = raw.get("facts")
            facts = facts if isinstance(facts, dict) else {}
            out.append(Issued(path, key, chain, str(raw.get("ca", "")), facts))
        except (OSError, ValueError, KeyError):
            continue
    return out


def forget(path: Path) -> None:
    """The issuance is in a release now (which holds the same key and chain)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def release_time(ref: str) -> dt.datetime | None:
    """When a release was staged (or an issuance kept), from the time its id starts with."""
    try:
        return dt.datetime.strptime(ref[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
