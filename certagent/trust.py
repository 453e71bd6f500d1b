"""Whether a directory can be trusted by the user certagent runs as (root, usually).

Root must not act on what another user controls: a state directory, a template
directory or a keepalived dump directory that someone else owns or can write lets
that someone plant links (root follows them and writes where they point) or files
(root reads them as the truth), as certbot's `make_or_verify_dir` guards against.
A directory is trusted when it and every directory above it are owned by root or by
us, and none can be written by anyone else (a sticky directory such as /tmp may be
above it: there nobody can move or replace what is not theirs).

The configuration is judged the same way (`read_file`): it names the hooks root
runs, so a file or a folder of parts that another user can change would hand them
root, as sudo refuses a sudoers file and cron a crontab that others can write.

Side effects: reads file metadata (lstat); `read_file` reads the file it judges.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def problem(path: Path, euid: int | None = None) -> str | None:
    """Why `path` (a directory, existing or not) is not safe to use, or None.

    Both the path as written and the path its links lead to are judged, component by
    component; a link must belong to root or us (it sits in a directory that is judged
    too). A part that does not exist yet is where it will be created: its existing
    ancestors are judged."""
    uid = os.geteuid() if euid is None else euid
    trusted = {0, uid}
    lexical = Path(os.path.abspath(path))
    for chain in (lexical, Path(os.path.realpath(lexical))):
        for i, part in enumerate([chain, *chain.parents]):
            try:
                st = part.lstat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                return f"cannot inspect {part}: {exc.strerror}"
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in trusted:
                    return f"{part} is a symlink owned by uid {st.st_uid}"
                continue
            why = _judge(part, st, trusted, own=i == 0)
            if why is not None:
                return why
    return None


def _judge(path: Path, st: os.stat_result, trusted: set[int], own: bool) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid not in trusted:
        return f"{path} is owned by uid {st.st_uid}, not by root or uid {max(trusted)}"
    writable = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0)
    if writable and (own or not st.st_mode & stat.S_ISVTX):
        who = "others" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
        return f"{path} can be written by {who} (mode {stat.S_IMODE(st.st_mode):o})"
    return None


MAX_HOPS = 40  # links followed to a configuration file (the kernel's own limit)


def read_file(
    path: Path, limit: int, euid: int | None = None, signed: list[str] | None = None
) -> bytes:
    """A configuration file's bytes, when only root or we can change them: the file
    (judged on the descriptor read, so what is read is what was judged) is a regular
    file of root's or ours that no one else can write, a link to it is root's or ours,
    and the folders above it, as written and as its links lead, are trusted
    (`problem`). ValueError saying why not (or when it is larger than `limit`).
    `signed`: the file as read (`signature`, before the read) is appended to it."""
    uid = os.geteuid() if euid is None else euid
    trusted = {0, uid}
    lexical = Path(os.path.abspath(path))
    hop = lexical
    for _ in range(MAX_HOPS):  # each link on the way: root's or ours, in a trusted folder
        why = problem(hop.parent, uid)
        if why is not None:
            raise ValueError(why)
        st = hop.lstat()
        if not stat.S_ISLNK(st.st_mode):
            break
        if st.st_uid not in trusted:
            raise ValueError(f"{hop} is a symlink owned by uid {st.st_uid}")
        hop = Path(os.path.normpath(Path(os.path.realpath(hop.parent)) / os.readlink(hop)))
    else:
        raise ValueError(f"more than {MAX_HOPS} links on the way to a file")
    # O_NONBLOCK: a FIFO in its place is refused below rather than waited on
    fd = os.open(lexical, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid not in trusted:
            raise ValueError(f"owned by uid {st.st_uid}, not by root or uid {uid}: its hooks "
                             "would run as root")  # fmt: skip
        if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != 0):
            who = "others" if st.st_mode & stat.S_IWOTH else f"group {st.st_gid}"
            raise ValueError(f"can be written by {who} (mode {stat.S_IMODE(st.st_mode):o}): "
                             "its hooks would run as root")  # fmt: skip
        if signed is not None:
            signed.append(signature(str(lexical), st))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def signature(path: str, st: os.stat_result) -> str:
    """What changes when a file is written, replaced or has its mode changed (a
    ctime cannot be set back): the key of what was read from it (store/quiet.py)."""
    return f"{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
