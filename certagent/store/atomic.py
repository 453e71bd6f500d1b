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
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import StoreError

MAX_JSON = 1 << 20  # meta.json and state.json are a few hundred bytes


def atomic_write(path: Path, data: bytes, mode: int = 0o644, group: int | None = None) -> None:
    """Write a whole file or nothing: temp file, fsync, rename, fsync the directory.
    On any failure (ENOSPC included) the temporary file is removed again."""
    with replacing(path, mode, group) as fd:
        write_all(fd, data)


@contextlib.contextmanager
def replacing(path: Path, mode: int = 0o644, group: int | None = None) -> Iterator[int]:
    """`atomic_write` for what is written in pieces: the temporary file's descriptor,
    renamed over `path` when the block ends, removed when it raises."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a killed run with our pid; never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
            yield fd
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
    _write_synced(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, data, mode, group)


def append_line(path: Path, line: bytes, mode: int = 0o600, group: int | None = None) -> None:
    """One line added to an append-only file (`mode`, and `group` when given), fsynced;
    the directory too when the file is new. A kill mid-write leaves at most a torn last
    line, which its reader drops."""
    created = not os.path.lexists(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    _write_synced(path, flags, line, mode, group)
    if created:
        fsync_dir(path.parent)


def _write_synced(path: Path, flags: int, data: bytes, mode: int, group: int | None) -> None:
    fd = os.open(path, flags, 0o600)  # no wider until its group is set
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, mode)  # the umask must not change what we asked for
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


def read_plain(path: Path, limit: int) -> bytes:
    """A plain file's bytes, opened without following a link or waiting on a FIFO in
    its place. FileNotFoundError when it is absent; another OSError, or ValueError when
    it is no plain file or larger than `limit`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a plain file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a small plain file (read_plain)."""
    raw = json.loads(read_plain(path, MAX_JSON).decode("utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    return raw


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def share_tree(
    parent: Path, base: Path, group: int | None, modes: tuple[int, int], secrets: Iterable[str]
) -> None:
    """`group` may read everything under `base` (and enter `parent`): directories
    `modes[0]`, secret files and the files directly in `base` `modes[1]`, others 0644."""
    dir_mode, secret_mode = modes
    secret_names = frozenset(secrets)
    for part in (parent, base):
        share(part, group, dir_mode)
    for folder, dirs, files in os.walk(base, followlinks=False):
        for d in dirs:
            share(Path(folder) / d, group, dir_mode)
        for f in files:
            path = Path(folder) / f
            secret = f in secret_names or path.parent == base  # state files: 0640
            share(path, group, secret_mode if secret else 0o644)


def probe_writable(folder: Path, min_free: int) -> str:
    """Enough free space under `folder`, and a file really written and synced there (a
    read-only or full filesystem, a quota): a note, or StoreError."""
    try:
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
        if free < min_free:
            raise StoreError(
                f"only {free // 2**20} MiB free under {folder} (need {min_free // 2**20} "
                "MiB: deploy.min_free_mb): not ordering a certificate that cannot be stored"
            )
        probe = folder / f".write-probe{os.getpid()}"
        try:
            atomic_write(probe, b"x" * 65536, 0o600)
        finally:
            with contextlib.suppress(FileNotFoundError):
                probe.unlink()
    except OSError as exc:
        raise StoreError(f"cannot write under {folder}: {exc.strerror or exc}: not ordering") \
            from exc  # fmt: skip
    return f"{free // 2**20} MiB free, writable"
