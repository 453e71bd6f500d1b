"""Probe one TLS endpoint every 20 ms and log what it served, one JSON line per probe.

    python -m testbed.vipprobe --host VIP --sni NAME --cafile ROOT... --out FILE

Each line: {"t": monotonic time, "fp": SHA-256 of the leaf or null, "error": why not,
"kind": "ok" | "cert" (a certificate was presented and not accepted) | "conn"}.
CLOCK_MONOTONIC is the same in every network namespace, so the test can compare
these times with its own. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import ssl
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--sni", required=True)
    p.add_argument("--cafile", action="append", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.02)
    args = p.parse_args()
    ctx = ssl.create_default_context()
    for cafile in args.cafile:
        ctx.load_verify_locations(cafile)
    with open(args.out, "a", buffering=1) as out:
        while True:
            start = time.monotonic()
            record: dict[str, object] = {"t": start, "fp": None, "error": None, "kind": "ok"}
            try:
                with (
                    socket.create_connection((args.host, args.port), timeout=0.5) as sock,
                    ctx.wrap_socket(sock, server_hostname=args.sni) as tls,
                ):
                    der = tls.getpeercert(binary_form=True)
                record["fp"] = hashlib.sha256(der or b"").hexdigest()
            except ssl.SSLCertVerificationError as exc:
                record.update(error=exc.verify_message, kind="cert")
            except (OSError, ssl.SSLError) as exc:
                record.update(error=str(exc), kind="conn")
            out.write(json.dumps(record) + "\n")
            time.sleep(max(0.0, args.interval - (time.monotonic() - start)))


if __name__ == "__main__":
    main()
