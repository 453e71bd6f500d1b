"""Benchmark: N certificates in one `certagent renew` against a local pebble.

Real http-01 validation (PEBBLE_VA_NOSLEEP=1, pebble's default 5 % bad nonces),
the real CLI as a subprocess, wall time including interpreter start-up.
Target (issue 2): 20 certificates under 5 s.  Usage: bench/renew_many.py [N] [ROUNDS]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.pebble import Pebble

CONCURRENCY = int(os.environ.get("CONCURRENCY", "4"))
MAX_ORDERS = int(os.environ.get("MAX_ORDERS", "4"))


def config(work: Path, pebble: Pebble, count: int, round_no: int) -> Path:
    lines = [
        f"state_dir: {work / f'state{round_no}'}",
        "ca:",
        f"  directory: {pebble.directory_url}",
        "  agree_tos: true",
        f"  trust_roots: [{pebble.tls_root}]",
        f"  max_orders: {MAX_ORDERS}",
        "  max_new_orders: 1000000",  # a local pebble: no public CA's per-account limit
        f"policy: {{concurrency: {CONCURRENCY}}}",
        "certificates:",
    ]
    for i in range(count):
        lines += [
            f"  c{i}:",
            f"    names: [c{i}.r{round_no}.bench.test, www.c{i}.r{round_no}.bench.test]",
            "    challenge:",
            "      type: http-01",
            f"      standalone: {{address: 127.0.0.1, port: {pebble.http_port}}}",
        ]
    path = work / f"bench{round_no}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pebble = Pebble(work / "pebble", nonce_reject=5).start()
        try:
            times = []
            for r in range(rounds):
                cfg = config(work, pebble, count, r)
                start = time.monotonic()
                proc = subprocess.run(
                    [sys.executable, "-m", "certagent", "-c", str(cfg), "renew"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                elapsed = time.monotonic() - start
                renewed = proc.stdout.count(": renewed")
                if proc.returncode != 0 or renewed != count:
                    print(proc.stdout, proc.stderr, file=sys.stderr)
                    return 1
                times.append(elapsed)
                print(f"round {r + 1}: {count} certificates (2 names each) in {elapsed:.2f} s")
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(
                f"best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s, "
                f"{min(times) / count * 1000:.0f} ms per certificate; peak RSS {rss:.0f} MiB "
                f"(target: {count} in < 5 s)"
            )
        finally:
            pebble.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
