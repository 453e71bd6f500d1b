"""`certagent check` over 200 loopback TLS endpoints: the issue's target is under 5 s.

One nginx (Debian) listens on 200 ports, each with its own certificate from a local
root; the config lists the 200 as `monitor.endpoints`. Runs `certagent check` as a
subprocess (start-up and imports included) three times and reports wall time and
the slowest single probe.

    .venv/bin/python bench/check_many.py [COUNT]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed import pki  # noqa: E402
from testbed.nginx import Nginx  # noqa: E402
from testbed.proc import free_port  # noqa: E402


def main(count: int = 200) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = pki.make_ca("bench root")
        pki.write(work / "root.pem", root.pem())
        sites = []
        for i in range(count):
            cert, key = pki.issue(root, [f"site{i}.bench.test"])
            sites.append(
                (
                    free_port(),
                    f"site{i}.bench.test",
                    pki.write(work / f"{i}.pem", cert),
                    pki.write(work / f"{i}.key", key, 0o600),
                )
            )
        nginx = Nginx(work / "nginx").start_sites(sites)
        try:
            config = {
                "state_dir": str(work / "state"),
                "ca": {"directory": "https://127.0.0.1:1/dir"},
                "certificates": {
                    "bench": {
                        "names": ["bench.test"],
                        "challenge": {"type": "http-01", "webroot": str(work)},
                        "deploy": {"endpoints": [f"127.0.0.1:{sites[0][0]}"]},
                    }
                },
                "monitor": {
                    "timeout": "5s",
                    "trust_roots": [str(work / "root.pem")],
                    "endpoints": [
                        {"name": f"site{i}", "address": f"127.0.0.1:{port}", "sni": name}
                        for i, (port, name, _, _) in enumerate(sites)
                    ],
                },
            }
            path = work / "certagent.yaml"
            path.write_text(json.dumps(config))
            names = [f"site{i}" for i in range(count)]
            for round_ in range(3):
                start = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "certagent", "-c", str(path), "--json", "check", *names],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    check=False,
                )
                wall = time.perf_counter() - start
                report = json.loads(proc.stdout)
                states = {e["state"] for e in report["endpoints"]}
                slowest = max(e["seconds"] for e in report["endpoints"])
                print(
                    f"round {round_ + 1}: {len(report['endpoints'])} endpoints in {wall:.2f} s "
                    f"(exit {proc.returncode}, states {sorted(states)}, "
                    f"slowest probe {slowest * 1000:.0f} ms)"
                )
                if proc.returncode != 0:
                    print(proc.stdout[:2000], proc.stderr[-2000:])
                    return 1
        finally:
            nginx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
