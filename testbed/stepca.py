"""step-ca (built from Debian's Go packages) with a CA made from scratch by `cryptography`.

step-ca validates http-01 on port 80 of each name and resolves names through
`--resolver`: here pebble-challtestsrv's DNS, which answers 127.0.0.1 for every name.
So it must run in a network namespace of our own (`testbed.netns`), where port 80 on
loopback belongs to the solver under test.

    python -m testbed.stepca init DIR     # only write the CA and ca.json, print the paths
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .pebble import challtestsrv
from .proc import Server, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "build" / "bin" / "step-ca"
PROVISIONER = "acme"


def create_ca(workdir: Path, port: int, cert_duration: str = "24h") -> Path:
    """Root, intermediate (unencrypted key: no password prompt) and ca.json; returns it."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = pki.make_ca("certagent staging root")
    inter = pki.make_ca("certagent staging intermediate", parent=root)
    pki.write(workdir / "root_ca.crt", root.pem())
    pki.write(workdir / "intermediate_ca.crt", inter.pem())
    pki.write(workdir / "intermediate_ca_key", pki.key_pem(inter.key), 0o600)
    (workdir / "db").mkdir(exist_ok=True)
    config = {
        "root": str(workdir / "root_ca.crt"),
        "crt": str(workdir / "intermediate_ca.crt"),
        "key": str(workdir / "intermediate_ca_key"),
        "address": f"127.0.0.1:{port}",
        "dnsNames": ["127.0.0.1", "localhost"],
        "logger": {"format": "text"},
        # Without a db block, new-account crashes step-ca's handler.
        "db": {"type": "bbolt", "dataSource": str(workdir / "db" / "ca.bolt")},
        "authority": {
            "provisioners": [
                {
                    "type": "ACME",
                    "name": PROVISIONER,
                    "forceCN": True,
                    "claims": {
                        "defaultTLSCertDuration": cert_duration,
                        "maxTLSCertDuration": "2160h",
                        "minTLSCertDuration": "1m",
                    },
                }
            ]
        },
    }
    path = workdir / "ca.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class StepCA:
    workdir: Path
    cert_duration: str = "24h"
    port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    challtest_port: int = field(default_factory=free_port)
    servers: list[Server] = field(default_factory=list)
    resolver: str | None = None  # host:port of a DNS server (a BIND) instead of its own

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/acme/{PROVISIONER}/directory"

    @property
    def root(self) -> Path:
        """Signs both step-ca's own HTTPS listener and every certificate it issues."""
        return self.workdir / "root_ca.crt"

    def start(self) -> StepCA:
        if not BINARY.is_file():
            raise RuntimeError(f"{BINARY} is missing: run `make step-ca`")
        config = create_ca(self.workdir, self.port, self.cert_duration)
        if self.resolver is None:
            self.servers.append(challtestsrv(self.workdir, self.challtest_port, self.dns_port))
        ca = Server(
            [str(BINARY), "--resolver", self.resolver or f"127.0.0.1:{self.dns_port}", str(config)],
            self.workdir / "step-ca.log",
            env={"STEPPATH": str(self.workdir / "steppath"), "HOME": str(self.workdir)},
        )
        self.servers.append(ca)
        ca.wait_until(port_open("127.0.0.1", self.port), what="ACME port")
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "init":
        sys.exit("usage: python -m testbed.stepca init DIR")
    target = Path(sys.argv[2]).resolve()
    print(create_ca(target, free_port()))
    print(target / "root_ca.crt")
