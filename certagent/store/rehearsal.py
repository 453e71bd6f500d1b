"""The staging store's record of the last passing rehearsal of a certificate
(certs/<name>/rehearsal.json): the digest of its inputs, when it passed, and the staging
release. A production renewal is not rehearsed again while the inputs are the same.

Side effects: filesystem.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import TYPE_CHECKING

from .. import layout
from ..errors import StoreError
from .atomic import atomic_write, dumps, make_private_dir

if TYPE_CHECKING:
    from . import Store


def read(store: Store, name: str) -> tuple[str, dt.datetime, str] | None:
    """The last passing rehearsal: (inputs digest, when, staging release), or None."""
    path = store.cert_dir(name) / layout.REHEARSAL
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return str(raw["inputs"]), dt.datetime.fromisoformat(raw["passed"]), str(raw["release"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"unreadable rehearsal record {path}: {exc}") from exc


def write(store: Store, name: str, inputs: str, passed: dt.datetime, release: str) -> None:
    make_private_dir(store.cert_dir(name), store.group)
    raw = {"inputs": inputs, "passed": passed.isoformat(), "release": release}
    atomic_write(store.cert_dir(name) / layout.REHEARSAL, dumps(raw), store.secret_mode,
                 store.group)  # fmt: skip


def forget(store: Store, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (store.cert_dir(name) / layout.REHEARSAL).unlink()
