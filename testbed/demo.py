"""`make demo`: the whole job end to end against a local pebble that this script starts.

Starts pebble and pebble-challtestsrv on loopback, renders examples/demo.yaml,
runs the real `certagent` command (renew, a second renew that does nothing,
status), then stops what it started. State goes to build/demo/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from testbed.pebble import Pebble

ROOT = Path(__file__).resolve().parent.parent


def certagent(config: Path, *args: str) -> int:
    argv = [sys.executable, "-m", "certagent", "-c", str(config), *args]
    print(f"\n$ certagent {' '.join(args)}", flush=True)
    return subprocess.run(argv, check=False).returncode


def main() -> int:
    work = ROOT / "build" / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pebble = Pebble(work / "pebble").start()
    print(f"demo: pebble (pid {pebble.servers[-1].pid}) at {pebble.directory_url}")
    try:
        text = (ROOT / "examples" / "demo.yaml").read_text()
        for key, value in {
            "@STATE_DIR@": str(work / "state"),
            "@DIRECTORY@": pebble.directory_url,
            "@TRUST_ROOT@": str(pebble.tls_root),
            "@HTTP_PORT@": str(pebble.http_port),
        }.items():
            text = text.replace(key, value)
        config = work / "certagent.yaml"
        config.write_text(text)
        steps = [
            ("config", "validate"),
            ("renew", "-v"),
            ("renew", "-v"),  # nothing due: says so with -v, silent without
            ("status",),
        ]
        for args in steps:
            code = certagent(config, *args)
            if code != 0:
                print(f"demo: certagent {' '.join(args)} exited {code}", file=sys.stderr)
                return code
        print(f"\ndemo: certificates are under {work / 'state' / 'certs'}")
        return 0
    finally:
        pebble.stop()
        print("demo: stopped pebble")


if __name__ == "__main__":
    sys.exit(main())
