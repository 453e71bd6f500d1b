"""One run at a time: an exclusive, non-blocking flock(2) on <state_dir>/lock, taken
only in a state directory that root may trust (owned by us, writable by nobody else).

The file holds the holder's PID, and after a `renew` that ended the token of the
no-op cache it left (store/quiet.py). Whoever takes the lock next reads it and writes
its own PID over it: any run that may change the store (a killed one included) thus
takes the token away, and the cache is believed only while the token is there.

Side effects: filesystem (creates the state directory and the lock file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .. import layout, trust
from ..errors import LockHeld, StoreError
from .atomic import make_private_dir, share


class Held:
    """The lock, held: what the previous holder left in the file, and a way to leave a
    token for the next."""

    def __init__(self, fd: int, previous: str) -> None:
        self._fd = fd
        self.previous = previous

    def token(self) -> str | None:
        """The token the previous holder left (it ended a renew), or None."""
        return token_in(self.previous)

    def leave(self, token: str) -> None:
        """For the next holder: this run ended, and left the cache `token` names."""
        os.pwrite(self._fd, f"{os.getpid()}\nquiet {token}\n".encode(), 0)


def token_in(text: str) -> str | None:
    """The token in what the lock file holds, or None."""
    lines = text.splitlines()
    if len(lines) == 2 and lines[1].startswith("quiet ") and len(lines[1]) <= 80:
        return lines[1][6:]
    return None


def left(root: Path) -> str | None:
    """The token in the lock file, read without taking the lock (`status`, `plan`: a run
    that takes it writes over the token at once), or None."""
    try:  # never through a link, never waiting on a FIFO in its place
        fd = os.open(root / layout.LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return token_in(os.pread(fd, 128, 0).decode("ascii", "replace"))
    except OSError:
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def held(root: Path, group: int | None, dir_mode: int) -> Iterator[Held]:
    """Hold the state directory's lock, or raise LockHeld at once."""
    ensure_root(root, group, dir_mode)
    path = root / layout.LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # ELOOP: a planted symlink, never followed
        raise StoreError(f"cannot open the lock {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"the lock {path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise LockHeld(f"another certagent run holds {path}") from exc
            raise
        previous = os.pread(fd, 128, 0).decode("ascii", "replace")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield Held(fd, previous)
    finally:
        os.close(fd)


def ensure_root(root: Path, group: int | None, dir_mode: int) -> None:
    """Create the state directory 0700, or refuse one that another user owns or can
    write (they could plant links that we, as root, would follow)."""
    why = trust.problem(root)
    if why is not None:
        raise StoreError(f"refusing to use the state directory {root}: {why}")
    try:
        make_private_dir(root, group)
        if group is not None:  # kept across runs: a renew never narrows it again
            share(root, group, dir_mode)
    except OSError as exc:
        raise StoreError(f"cannot create state directory {root}: {exc.strerror}") from exc
