"""Whether a directory can be trusted by the user certagent runs as (root, usually).

Root must not act on what another user controls: a state directory, a template
directory or a keepalived dump directory that someone else owns or can write lets
that someone plant links (root follows them and writes where they point) or files
(root reads them as the truth), as certbot's `make_or_verify_dir` guards against.
A directory is trusted when it and every directory above it are owned by root or by
us, and none can be written by anyone else (a sticky directory such as /tmp may be
above it: there nobody can move or replace what is not theirs).

Side effects: reads file metadata (lstat) only.
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
