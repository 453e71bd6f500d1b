"""A real BIND 9 (Debian's `named`) on a loopback port: authoritative for the test
zones, dynamic updates (RFC 2136) allowed for one TSIG key it generates, stopped by PID.

Zones: `example.test` (the certificates' names) and `acme.test` (where
`_acme-challenge.delegated.example.test` is a CNAME to, the acme-dns pattern).
Each zone's NS is `ns.example.test` with glue 127.0.0.1; pebble and certagent are
pointed at this server's port explicitly, so nothing resolves through the system.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .proc import Server, free_port


def _zone(origin: str, extra: str = "") -> str:
    return (
        "$TTL 60\n"
        f"@ IN SOA ns.example.test. hostmaster.{origin}. 1 60 60 600 5\n"
        "@ IN NS ns.example.test.\n"
        f"{extra}"
    )


@dataclass
class Bind:
    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"  # another loopback address (in a namespace) can take port 53
    key_name: str = "certagent-key"
    secret: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    server: Server | None = None
    primary: Bind | None = None  # set: a secondary of that server (zone transfers)
    secondary_port: int | None = None  # set on a primary: NOTIFY that secondary

    @property
    def key_file(self) -> Path:
        """The TSIG key in BIND's own format (what `tsig-keygen` writes)."""
        return self.workdir / "tsig.key"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Bind:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        key = (
            f'key "{self.key_name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{self.secret}";\n}};\n'
        )
        self.key_file.write_text(key)
        self.key_file.chmod(0o600)
        (self.workdir / "example.test.db").write_text(
            _zone(
                "example.test",
                "ns IN A 127.0.0.1\nwww IN A 127.0.0.1\nmixed IN A 127.0.0.1\n"
                "_acme-challenge.delegated IN CNAME delegated.acme.test.\n",
            )
        )
        (self.workdir / "acme.test.db").write_text(_zone("acme.test"))
        if self.primary is not None:  # a secondary: the zones come by transfer
            src = f"primaries {{ 127.0.0.1 port {self.primary.port}; }};"
            zones = "".join(
                f'zone "{z}" {{ type secondary; file "{self.workdir}/{z}.sec"; {src} }};\n'
                for z in ("example.test", "acme.test")
            )
        else:
            notify = ""
            if self.secondary_port is not None:
                also = f"also-notify {{ 127.0.0.1 port {self.secondary_port}; }};"
                notify = f"notify explicit; {also} allow-transfer {{ any; }};"
            zones = "".join(
                f'zone "{z}" {{ type primary; file "{self.workdir}/{z}.db"; {notify}\n'
                f'    allow-update {{ key "{self.key_name}"; }}; }};\n'
                for z in ("example.test", "acme.test")
            )
        conf = f"""
options {{
    directory "{self.workdir}";
    pid-file "{self.workdir}/named.pid";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion yes;  # for 127.0.0.1 only: it chases a CNAME into its other zone, as a resolver would
    allow-recursion {{ 127.0.0.0/8; }};
    dnssec-validation no;
    notify {"explicit" if self.secondary_port else "no"};
    session-keyfile "{self.workdir}/session.key";
}};
include "{self.key_file}";
{zones}"""
        (self.workdir / "named.conf").write_text(conf)
        check = subprocess.run(["named-checkconf", str(self.workdir / "named.conf")],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if check.returncode != 0:
            raise RuntimeError(f"named.conf: {check.stdout}{check.stderr}")
        argv = ["named", "-g", "-4", "-c", str(self.workdir / "named.conf")]
        self.server = Server(argv, self.workdir / "named.log")
        self.server.wait_until(self.answers, what=f"named on {self.address}")
        return self

    def answers(self) -> bool:
        return bool(self.query("example.test", "SOA"))

    def query(self, name: str, rtype: str) -> list[str]:
        """What this server answers (dig, no recursion)."""
        out = subprocess.run(
            ["dig", "+short", "+norecurse", "+time=1", "+tries=1", "-p", str(self.port),
             f"@{self.host}", name, rtype],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return [x.strip('"') for x in out.stdout.split()] if out.returncode == 0 else []

    def add_txt(self, name: str, value: str) -> None:
        """Add a TXT record by a signed dynamic update (nsupdate, the operator's way)."""
        script = (f"server {self.host} {self.port}\nupdate add {name} 60 TXT \"{value}\"\n"
                  "send\n")  # fmt: skip
        done = subprocess.run(["nsupdate", "-k", str(self.key_file)], input=script,
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"nsupdate: {done.stdout}{done.stderr}")

    def pause(self) -> None:
        """SIGSTOP: a secondary that lags (its NOTIFYs wait in the socket)."""
        assert self.server is not None
        os.kill(self.server.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.server is not None
        os.kill(self.server.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
