"""The floor of a no-op run: the least a cron job can do to know that nothing is due.
For each certificate in a certagent state directory, read the live certificate and
compare its notAfter with now (a third of its lifetime left: due); nothing else: no
configuration, no state, no integrity check, no record of the run.

Usage: noop_floor.py STATE_DIR   (prints how many are due)
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from cryptography import x509


def main(state_dir: str) -> int:
    now = dt.datetime.now(dt.UTC)
    due = 0
    certs = os.path.join(state_dir, "certs")
    for name in os.listdir(certs):
        try:
            with open(os.path.join(certs, name, "current", "cert.pem"), "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except OSError:
            due += 1
            continue
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if now >= end - (end - start) / 3:
            due += 1
    print(due)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
