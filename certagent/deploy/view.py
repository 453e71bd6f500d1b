"""What another process sees: the view the config test runs in (a private mount
namespace in which every destination shows its candidate file, so the test reads
exactly what will go live), and whether the server's user can read a file.

Side effects: filesystem (copies under a scratch directory).
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path


def candidate_view(candidates: Mapping[Path, Path], scratch: Path) -> list[str] | None:
    """An argv prefix that runs a command in a private mount namespace where every
    destination shows its candidate file (see `Gate.config_test`).

    A directory holding a destination that does not exist yet is replaced by a copy
    (its other entries copied, its subdirectories bound through) in which every
    destination of that directory is a link to its candidate; elsewhere each existing
    destination is bind-mounted over by its candidate."""
    if not candidates or shutil.which("unshare") is None:
        return None
    copied = {dest.parent for dest in candidates if not dest.is_file()}
    lines = ["set -e"]
    for dest, candidate in candidates.items():
        if dest.parent not in copied:  # a live file, or a link resolving to one: shadow it
            lines.append(f"mount --bind {shlex.quote(str(candidate))} {shlex.quote(str(dest))}")
    for i, parent in enumerate(sorted(copied)):
        copy = scratch / str(i)
        copy.mkdir(parents=True, mode=0o700)
        ours = {d.name: c for d, c in candidates.items() if d.parent == parent}
        for entry in parent.iterdir():
            if entry.name in ours:
                continue
            if entry.is_symlink():
                os.symlink(os.readlink(entry), copy / entry.name)
            elif entry.is_dir():
                (copy / entry.name).mkdir()
                lines.append(
                    f"mount --bind {shlex.quote(str(entry))} {shlex.quote(str(copy / entry.name))}"
                )
            elif entry.is_file():
                shutil.copy2(entry, copy / entry.name)
        for name, candidate in ours.items():
            os.symlink(candidate, copy / name)
        # --rbind: the subdirectories bound into the copy come along
        lines.append(f"mount --rbind {shlex.quote(str(copy))} {shlex.quote(str(parent))}")
    lines.append('exec "$@"')
    script = "\n".join(lines)
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "gate"]


def unreadable_by(path: Path, user: str) -> str | None:
    """Why `user` cannot read `path` (each directory needs x, the file r), or None."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"user {user} does not exist"
    if entry.pw_uid == 0:
        return None
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    chain = [*reversed(path.parents), path]
    for i, part in enumerate(chain):
        try:
            st = part.stat()
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        need = stat.S_IXOTH if i < len(chain) - 1 else stat.S_IROTH
        if st.st_uid == entry.pw_uid:
            need <<= 6
        elif st.st_gid in groups:
            need <<= 3
        if not st.st_mode & need:
            what = "enter" if i < len(chain) - 1 else "read"
            return f"user {user} cannot {what} {part} (mode {stat.S_IMODE(st.st_mode):o})"
    return None
