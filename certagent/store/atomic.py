"""Whole files or nothing: write to a temporary file, fsync, rename, fsync the
directory; private directories made with their modes (not the umask's); small JSON
files read without following a link. Every other part of certagent that writes a file
it must not leave half-written comes through here.

Side effects: filesystem.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

MAX_JSON = 1 << 20  # meta.json and state.json are a few hundred bytes


def atomic_write(path: Path, data: bytes, mode: int = 0o644, group: int | None = None) -> None:
    """Write a whole file or nothing: temp file, fsync, rename, fsync the directory.
    On any failure (ENOSPC included) the temporary file is removed again."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a killed run with our pid; never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new(path: Path, data: bytes, mode: int, group: int | None = None) -> None:
    """Create a file that must not exist yet (inside a release being written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, mode)
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path, group: int | None = None) -> None:
    """Create path and any missing parents 0700 (mkdir's parents=True would use the
    umask); with `group`, 0750 and owned by that group, for its readers."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        share(folder, group, 0o750 if group is not None else 0o700)


def share(path: Path, group: int | None, mode: int) -> None:
    """Set mode, and the group when one is given, without following a link."""
    if path.is_symlink():
        return
    if group is not None:
        os.chown(path, -1, group, follow_symlinks=False)
    os.chmod(path, mode)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a small file, opened without following a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ValueError(f"larger than {MAX_JSON} bytes")
    raw = json.loads(data.decode("utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
