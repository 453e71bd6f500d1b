"""A release on disk: written complete or not at all, read back from its meta.json,
checked against the digests recorded when it was staged, and the leftovers of a
run killed while writing or pruning one.

Side effects: filesystem (a certificate's `releases/` and its own directory).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import StoreError
from ..model import KeyType, Release
from .atomic import dumps, fsync_dir, share, write_new
from .certstate import aware, opt_str


def write(
    releases: Path,
    release_id: str,
    files: Mapping[str, bytes],
    meta: Mapping[str, Any],
    group: int | None,
    modes: tuple[int, int],
) -> Path:
    """Write `releases/<release_id>` through `.tmp-<release_id>`, every file fsynced,
    then one rename (`modes`: directories', secret files')."""
    dir_mode, secret_mode = modes
    final = releases / release_id
    tmp = releases / f".tmp-{release_id}"
    if final.exists():
        raise StoreError(f"release {final} already exists")
    shutil.rmtree(tmp, ignore_errors=True)
    digests = {f: hashlib.sha256(files[f]).hexdigest() for f in layout.CHECKED_FILES if f in files}
    try:
        tmp.mkdir(mode=0o700)
        share(tmp, group, dir_mode)
        for fname, data in files.items():
            target = tmp / fname
            if target.parent != tmp and not target.parent.is_dir():
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                share(target.parent, group, dir_mode)
            secret = target.name in layout.SECRET_FILES
            write_new(target, data, secret_mode if secret else 0o644, group)
            if target.parent != tmp:
                fsync_dir(target.parent)
        write_new(tmp / layout.META, dumps({**meta, "sha256": digests}), 0o644)
        fsync_dir(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise
    fsync_dir(releases)
    return final


def from_meta(name: str, path: Path, meta: Mapping[str, Any]) -> Release:
    """The release described by its meta.json (ValueError, KeyError, TypeError when
    the record is not one)."""
    digests = meta.get("sha256") or {}
    if not isinstance(digests, dict) or not all(
        f in layout.CHECKED_FILES and isinstance(d, str) for f, d in digests.items()
    ):
        raise ValueError("bad sha256 table")
    return Release(
        cert_name=name,
        release_id=path.name,
        path=path,
        names=tuple(_str_list(meta["names"])),
        key_type=KeyType(meta["key_type"]),
        not_before=aware(meta["not_before"]),
        not_after=aware(meta["not_after"]),
        fingerprint_sha256=str(meta["fingerprint_sha256"]),
        issuer=str(meta["issuer"]),
        ca=str(meta.get("ca", "")),
        digests=digests,
        profile=opt_str(meta.get("profile")),
        skipped=opt_str(meta.get("skipped")),
    )


def digest_damage(paths: Iterable[str], digests: Iterable[str]) -> str | None:
    """The first file that cannot be read or no longer has its recorded SHA-256."""
    for path, digest in zip(paths, digests, strict=True):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            return f"{path}: {exc.strerror}"
        if hashlib.sha256(data).hexdigest() != digest:
            return f"{path} changed since it was staged (SHA-256 differs)"
    return None


def parse_damage(folder: Path) -> str | None:
    """For releases staged before digests were recorded: parse and match key and cert."""
    from .. import crypto  # deferred: cryptography only where it is needed

    key_file = folder / layout.KEY
    try:
        key = crypto.load_key(key_file.read_bytes())
        if not crypto.key_matches(key, (folder / layout.CERT).read_bytes()):
            return f"{key_file} does not match {folder / layout.CERT}"
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    except (ValueError, TypeError) as exc:
        return f"{folder}: key or certificate does not parse ({exc})"
    return None


def leftovers(folder: Path) -> list[Path]:
    """Remove what a killed run left in a certificate's directory: half-written and
    half-pruned releases, an interrupted atomic write or disk probe. Two directory
    reads (the certificate's and its releases'), however many releases."""
    removed = []
    for entry in _entries(folder / layout.RELEASES):
        if entry.name.startswith((".tmp-", ".prune-")):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    for entry in _entries(folder):
        name = entry.name
        killed = name.startswith(".write-probe") or (
            name.startswith(".") and ".tmp" in name and name.rsplit(".tmp", 1)[1].isdigit()
        )
        if killed and not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return sorted(removed)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError("expected a list of strings")
    return value
