"""`make demo`: the whole job end to end against a local CA and web server that it starts.

In a private network namespace (step-ca validates http-01 on port 80): starts pebble
(production CA), step-ca (staging CA) and two nginx instances on loopback, renders
testbed/demo.yaml.in, runs the real `certagent` command (renew: rehearsal on step-ca,
then order from pebble and deploy to nginx; a second renew that does nothing;
rehearse; status), shows what nginx serves, then stops what it started. State goes
to build/demo/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from certagent.model import Endpoint
from certagent.verify import probe, trust_context
from testbed import netns
from testbed.nginx import Nginx
from testbed.pebble import Pebble
from testbed.stepca import StepCA

ROOT = Path(__file__).resolve().parent.parent


def certagent(config: Path, *args: str) -> int:
    argv = [sys.executable, "-m", "certagent", "-c", str(config), *args]
    print(f"\n$ certagent {' '.join(args)}", flush=True)
    return subprocess.run(argv, check=False).returncode


def main() -> int:
    if not netns.can_enter():
        print("demo: run as root: step-ca needs port 80 in a private network namespace")
        return 1
    netns.enter_private_netns()
    work = ROOT / "build" / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started: list[Pebble | StepCA | Nginx] = []
    try:
        pebble = Pebble(work / "pebble").start()
        started.append(pebble)
        print(f"demo: pebble (pid {pebble.servers[-1].pid}) at {pebble.directory_url}")
        stepca = StepCA(work / "step-ca").start()
        started.append(stepca)
        print(f"demo: step-ca (pid {stepca.servers[-1].pid}) at {stepca.directory_url}")
        nginx = Nginx(work / "nginx").start()
        started.append(nginx)
        staging = Nginx(work / "nginx-staging").start()
        started.append(staging)
        print(
            f"demo: nginx on 127.0.0.1:{nginx.port} (production) and 127.0.0.1:{staging.port}"
            " (staging), each with a self-signed bootstrap certificate"
        )
        text = (ROOT / "testbed" / "demo.yaml.in").read_text()
        for key, value in {
            "@STATE_DIR@": str(work / "state"),
            "@DIRECTORY@": pebble.directory_url,
            "@TRUST_ROOT@": str(pebble.tls_root),
            "@HTTP_PORT@": str(pebble.http_port),
            "@NGINX_PREFIX@": str(nginx.prefix),
            "@NGINX_PORT@": str(nginx.port),
            "@ISSUING_ROOT@": str(_write(work / "pebble-root.pem", pebble.issuing_roots())),
            "@STAGING_DIRECTORY@": stepca.directory_url,
            "@STAGING_ROOT@": str(stepca.root),
            "@STAGING_PREFIX@": str(staging.prefix),
            "@STAGING_PORT@": str(staging.port),
        }.items():
            text = text.replace(key, value)
        config = work / "certagent.yaml"
        config.write_text(text)
        steps = [
            ("config", "validate"),
            ("renew", "-v"),  # rehearsal on step-ca, then pebble and the production nginx
            ("renew", "-v"),  # nothing due: says so with -v, silent without
            ("rehearse", "www"),  # on demand, production untouched
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
            print(
                f"demo: nginx does not serve the issued certificate: {served.error}",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        for server in reversed(started):
            server.stop()
        print("demo: stopped nginx, step-ca and pebble")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


if __name__ == "__main__":
    sys.exit(main())
