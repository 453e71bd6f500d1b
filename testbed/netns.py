"""Move this process into a private network namespace with only loopback up.

step-ca validates http-01 on port 80 of the name, always; inside a namespace of our
own, port 80 on 127.0.0.1 is ours and nothing on the host is touched or reachable.
Everything started afterwards (pebble, step-ca, nginx, certagent) inherits it.
Call it before any thread starts: a namespace change applies to the calling thread.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

CLONE_NEWNET = 0x40000000
_entered = False


def can_enter() -> bool:
    return os.geteuid() == 0


def enter_private_netns() -> None:
    """Idempotent: a second call in the same process does nothing."""
    global _entered
    if _entered:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _entered = True
