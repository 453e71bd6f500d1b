"""haproxy's runtime API on its admin socket: a certificate haproxy already serves is
replaced in place (`set ssl cert` then `commit ssl cert`, haproxy 2.2+), without a
reload, so no worker is started or drained. The file on disk is the same new one, so a
restart loads it too. haproxy knows a certificate by the path it loaded it from.

Side effects: a Unix socket (one connection per command, haproxy's non-interactive
mode).
"""

from __future__ import annotations

import socket
from pathlib import Path

from ..errors import CertagentError

MAX_ANSWER = 64 * 1024


class RuntimeApiError(CertagentError):
    """haproxy refused or could not be asked; its own words are the message."""


def update(sock: Path, cert_path: Path, pem: bytes, timeout: float) -> str:
    """Replace the certificate haproxy loaded from `cert_path` with `pem` (chain + key)
    and commit it; returns haproxy's answer. RuntimeApiError when it refuses (e.g. a
    certificate it never loaded: a new one needs a reload)."""
    text = pem.decode("ascii").strip()
    if "\n\n" in text:  # an empty line ends the payload on haproxy's side
        text = "\n".join(line for line in text.splitlines() if line.strip())
    answer = _ask(sock, f"set ssl cert {cert_path} <<\n{text}\n\n", timeout)
    if "Transaction created" not in answer and "Transaction updated" not in answer:
        _ask(sock, f"abort ssl cert {cert_path}\n", timeout, check=False)
        raise RuntimeApiError(f"set ssl cert {cert_path}: {answer.strip() or 'no answer'}")
    answer = _ask(sock, f"commit ssl cert {cert_path}\n", timeout)
    if "Success!" not in answer:
        raise RuntimeApiError(f"commit ssl cert {cert_path}: {answer.strip() or 'no answer'}")
    return f"{cert_path}: updated in place"


def _ask(sock: Path, command: str, timeout: float, check: bool = True) -> str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(sock))
            conn.sendall(command.encode("ascii"))
            chunks, size = [], 0
            while size < MAX_ANSWER:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError as exc:
        if not check:
            return ""
        raise RuntimeApiError(f"haproxy's admin socket {sock}: {exc.strerror or exc}") from exc
    return b"".join(chunks).decode("utf-8", "replace")
