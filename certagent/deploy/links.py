"""The files a deploy owns: each destination a link through the certificate's
`current` link, made atomically (what was there kept aside), and the one flip of
`current` that swaps a certificate and its configs at once, or back.

Side effects: filesystem (links, the state directory's `current`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from pathlib import Path

from ..model import CertSpec
from ..store import Store
from .ports import need

BACKUP_SUFFIX = ".certagent-orig"


def swap(store: Store, spec: CertSpec, release_id: str) -> list[str]:
    """One atomic flip of `current`; destinations are (made) links through it."""
    store.activate(spec.name, release_id)
    current = store.current_link(spec.name)
    return [n for dest, src in need(spec).placements() if (n := link_dest(dest, current / src))]


def unswap(store: Store, spec: CertSpec) -> list[str]:
    """No previous release: remove our links and put back what they replaced."""
    notes = []
    for dest, _ in need(spec).placements():
        backup = dest.with_name(dest.name + BACKUP_SUFFIX)
        if dest.is_symlink():
            if backup.exists():
                os.replace(backup, dest)
                notes.append(f"restored {dest} from {backup.name}")
            else:
                dest.unlink()
                notes.append(f"removed {dest}")
    with contextlib.suppress(FileNotFoundError):
        store.current_link(spec.name).unlink()
    return notes


def link_dest(dest: Path, target: Path) -> str | None:
    """Make dest a symlink to target (atomically); keep what was there as dest.certagent-orig."""
    if dest.is_symlink() and os.readlink(dest) == str(target):
        return None
    note = f"linked {dest}"
    if dest.exists() and not dest.is_symlink():
        backup = dest.with_name(dest.name + BACKUP_SUFFIX)
        if backup.exists():
            backup = dest.with_name(
                f"{dest.name}{BACKUP_SUFFIX}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
            )
        os.link(dest, backup)  # a hard link: the original survives the replace below
        note += f" (kept the original as {backup.name})"
    tmp = dest.with_name(f".{dest.name}.certagent-tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, dest)
    return note
