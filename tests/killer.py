"""`python -m tests.killer RULE ARGS...`: run certagent's CLI in this process and
SIGKILL it at the moment RULE names, as seen through Python's audit hooks (PEP 578):
no certagent internals are patched, the kill is a real kill -9 of a real run.

Rules (the web server's port for `after-reload`/`verify` comes from $KILL_PORT):
  order         the finalize request is about to be sent: the order is pending at the CA
  stage         the first file of a new release is opened under releases/.tmp-*
  config-test   the config-test command is started (argv with -t)
  after-swap    the first step after `current` was flipped to the new release
  after-reload  the first connection after the reload hook ran (before verify)
  verify        the second TLS connection of verify (a handshake already done)
  rollback      right after `current` is flipped back during a rollback
  prune         an old release is being deleted
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from certagent import cli

RULE = sys.argv[1]
PORT = int(os.environ.get("KILL_PORT", "0"))
seen = {"swaps": 0, "hooked": 0, "connects": 0, "armed": 0}


def die() -> None:
    seen["armed"] = 0  # os.kill is an audit event itself
    os.kill(os.getpid(), signal.SIGKILL)


def hook(event: str, args: tuple[Any, ...]) -> None:
    if seen["armed"]:
        die()
    if event == "http.client.send" and RULE == "order":
        data = args[1]
        if isinstance(data, bytes | bytearray) and b"/finalize-order/" in data[:200]:
            die()
    elif event == "open" and RULE == "stage":
        if "/releases/.tmp-" in str(args[0]) and str(args[0]).endswith(".pem"):
            die()
    elif event == "subprocess.Popen":
        argv = [str(a) for a in (args[1] or [])]
        if RULE == "config-test" and "-t" in argv:
            die()
        if "-s" in argv and "reload" in argv:  # nginx -s reload: the post-run hook
            seen["hooked"] += 1
    elif event == "os.rename" and ".current.tmp" in str(args[0]):
        seen["swaps"] += 1
        if (RULE == "after-swap" and seen["swaps"] == 1) or (
            RULE == "rollback" and seen["swaps"] == 2
        ):
            seen["armed"] = 1  # the flip happens right after this event: kill at the next
    elif event == "socket.connect" and seen["hooked"]:
        address = args[1]
        if isinstance(address, tuple) and len(address) >= 2 and address[1] == PORT:
            seen["connects"] += 1
            if (RULE == "after-reload") or (RULE == "verify" and seen["connects"] == 2):
                die()
    elif event == "shutil.rmtree" and RULE == "prune":
        die()


sys.addaudithook(hook)
sys.exit(cli.main(sys.argv[2:]))
