"""A real haproxy (Debian) as its administrators run it, in a temporary directory, on
loopback ports, stopped by PID: master-worker (`-W`), the operator's own haproxy.cfg
with a plain-http redirect frontend, an admin stats socket, and a TLS frontend whose
`bind ... crt DIR/certs/` loads every combined PEM (chain + key) in that directory,
SNI picking each. certagent links its bundles into that directory; the configuration
stays the operator's. A reload is SIGUSR2 to the master (what Debian's unit does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .proc import Server, free_port, port_open


@dataclass
class Haproxy:
    prefix: Path
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    server: Server | None = None

    @property
    def conf(self) -> Path:
        return self.prefix / "haproxy.cfg"

    @property
    def certs(self) -> Path:
        return self.prefix / "certs"

    @property
    def socket(self) -> Path:
        return self.prefix / "admin.sock"

    @property
    def test_argv(self) -> list[str]:
        return ["haproxy", "-c", "-f", str(self.conf)]

    @property
    def reload_argv(self) -> list[str]:
        assert self.server is not None
        return ["kill", "-USR2", str(self.server.pid)]

    def config_text(self) -> str:
        return (
            "global\n"
            f"    stats socket {self.socket} mode 600 level admin expose-fd listeners\n"
            "    log stdout format raw local0 info\n"
            "defaults\n"
            "    mode http\n"
            "    log global\n"
            "    timeout connect 5s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend plain_http\n"
            f"    bind 127.0.0.1:{self.http_port}\n"
            "    http-request redirect scheme https code 301\n"
            "frontend tls\n"
            f"    bind 127.0.0.1:{self.port} ssl crt {self.certs}/\n"
            "    http-request return status 200 content-type text/plain string ok\n"
        )

    def start(self) -> Haproxy:
        """The operator's setup: a bootstrap certificate in the crt directory (haproxy
        will not start a TLS bind without one), then the master and its worker."""
        self.certs.mkdir(parents=True, exist_ok=True)
        ca = pki.make_ca("haproxy bootstrap")
        cert, key = pki.issue(ca, ["bootstrap.example.test"])
        pki.write(self.certs / "00-bootstrap.pem", cert + key, 0o600)
        self.conf.write_text(self.config_text())
        self.server = Server(["haproxy", "-W", "-db", "-f", str(self.conf)],
                             self.prefix / "haproxy.log")  # fmt: skip
        self.server.wait_until(port_open("127.0.0.1", self.port), what=f"port {self.port}")
        return self

    def reloads(self) -> int:
        """How many times the master reloaded (it logs each)."""
        try:
            text = (self.prefix / "haproxy.log").read_text(errors="replace")
            return text.count("Reloading HAProxy")
        except OSError:
            return 0

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()  # SIGTERM to the master, then its whole group is awaited
            self.server = None
