"""The first no-op run after an issuance beside a steady one (issue #28): N certificates
issued by certagent from a local pebble (always-valid), then `certagent renew` twice
with nothing due. Prints wall seconds and peak RSS of each, and whether the first one
wrote state files (it should not: what the CA offers is learnt once per CA).

Usage: bench/first_noop.py [N]   (default 1000; `make bench` runs it after side_by_side)
Needs: pebble (Debian package).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.side_by_side import timed  # noqa: E402
from testbed.pebble import Pebble  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CERTAGENT = [sys.executable, "-m", "certagent"]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="certagent-bench-") as tmp:
        work = Path(tmp)
        pebble = Pebble(work / "pebble", env={"PEBBLE_VA_ALWAYS_VALID": "1"}).start()
        try:
            (work / "www").mkdir()
            lines = [
                f"state_dir: {work / 'state'}",
                f"ca: {{directory: {pebble.directory_url}, agree_tos: true, "
                f"trust_roots: [{pebble.tls_root}], max_new_orders: 1000000, "
                "max_orders: 8}",
                "policy: {concurrency: 8}",
                "certificates:",
            ]
            lines += [f"  c{i:05d}: {{names: [c{i:05d}.bench.test], challenge: {{type: http-01, "
                      f"webroot: {work / 'www'}}}}}" for i in range(N)]  # fmt: skip
            cfg = work / "certagent.yaml"
            cfg.write_text("\n".join(lines) + "\n")
            issued = timed([*CERTAGENT, "-c", str(cfg), "renew"], ENV)
            states = list((work / "state" / "certs").glob("*/state.json"))
            before = {p: p.stat().st_mtime_ns for p in states}
            first = timed([*CERTAGENT, "-c", str(cfg), "renew"], ENV)
            written = sum(1 for p in states if p.stat().st_mtime_ns != before[p])
            steady = min(timed([*CERTAGENT, "-c", str(cfg), "renew"], ENV) for _ in range(3))
        finally:
            pebble.stop()
    print(f"{N} certificates issued in {issued[0]:.1f} s")
    print(f"first no-op after issuance: {first[0]:.2f} s, {first[1]:.0f} MiB, "
          f"{written} state file(s) written")
    print(f"steady no-op (best of 3):   {steady[0]:.2f} s, {steady[1]:.0f} MiB")
    print(f"ratio first/steady: {first[0] / steady[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
