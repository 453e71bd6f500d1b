"""`make demo`: the whole job end to end against a local pebble and nginx that it starts.

Starts pebble, pebble-challtestsrv and nginx on loopback, renders
examples/demo.yaml, runs the real `certagent` command (renew with deploy to
nginx, a second renew that does nothing, status), shows what nginx serves, then
stops what it started. State goes to build/demo/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from certagent.model import Endpoint
from certagent.verify import probe, trust_context
from testbed.nginx import Nginx
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
    nginx = Nginx(work / "nginx").start()
    print(f"demo: nginx (pid {nginx.server.pid if nginx.server else '?'}) on 127.0.0.1:{nginx.port}"
          " with a self-signed bootstrap certificate")
    try:
        text = (ROOT / "examples" / "demo.yaml").read_text()
        for key, value in {
            "@STATE_DIR@": str(work / "state"),
            "@DIRECTORY@": pebble.directory_url,
            "@TRUST_ROOT@": str(pebble.tls_root),
            "@HTTP_PORT@": str(pebble.http_port),
            "@NGINX_PREFIX@": str(nginx.prefix),
            "@NGINX_PORT@": str(nginx.port),
            "@ISSUING_ROOT@": str(_write(work / "pebble-root.pem", pebble.issuing_roots())),
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
        endpoint = Endpoint("127.0.0.1", nginx.port, "www.example.test")
        served = probe(endpoint, trust_context([work / "pebble-root.pem"]), 5.0)
        release = (work / "state" / "certs" / "www" / "current").resolve()
        print(f"\ndemo: a TLS client verified {endpoint}: it serves {served.fingerprint}")
        print(f"demo: that is release {release.name}; nginx.conf -> {nginx.conf.readlink()}")
        if served.fingerprint is None or not release.name.endswith(served.fingerprint[:8]):
            print(f"demo: nginx does not serve the issued certificate: {served.error}",
                  file=sys.stderr)
            return 1
        return 0
    finally:
        nginx.stop()
        pebble.stop()
        print("demo: stopped nginx and pebble")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


if __name__ == "__main__":
    sys.exit(main())
