"""pebble + pebble-challtestsrv from the Debian package, on loopback ports."""

from __future__ import annotations

import json
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .proc import Server, free_port, port_open


@dataclass
class Pebble:
    workdir: Path
    validity_seconds: int | None = None
    nonce_reject: int = 0
    authz_reuse: int | None = None
    blocklist: tuple[str, ...] = ()
    alternate_roots: int = 0  # extra chains offered through Link: rel="alternate"
    host: str = "127.0.0.1"  # where pebble listens (a LAN address for a cluster)
    answer: str = "127.0.0.1"  # what its DNS answers for every name (where it validates)
    http_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)  # where pebble validates tls-alpn-01
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    challtest_port: int = field(default_factory=free_port)
    servers: list[Server] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # e.g. PEBBLE_VA_ALWAYS_VALID for benches
    dns_server: str | None = None  # host:port pebble's VA resolves through (a BIND), else its own

    @property
    def directory_url(self) -> str:
        return f"https://{self.host}:{self.port}/dir"

    @property
    def tls_root(self) -> Path:
        """The root that signs pebble's own HTTPS listener (for ca.trust_roots)."""
        return self.workdir / "listener-root.pem"

    def start(self) -> Pebble:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = pki.make_ca("pebble listener root")
        cert, key = pki.issue(ca, sorted({self.host, "127.0.0.1", "localhost"}))
        pki.write(self.tls_root, ca.pem())
        pki.write(self.workdir / "listener.pem", cert)
        pki.write(self.workdir / "listener.key", key, 0o600)
        cfg = {
            "pebble": {
                "listenAddress": f"{self.host}:{self.port}",
                "managementListenAddress": f"{self.host}:{self.management_port}",
                "certificate": str(self.workdir / "listener.pem"),
                "privateKey": str(self.workdir / "listener.key"),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "domainBlocklist": list(self.blocklist),
            }
        }
        if self.validity_seconds is not None:
            cfg["pebble"]["certificateValidityPeriod"] = self.validity_seconds
        (self.workdir / "pebble.json").write_text(json.dumps(cfg, indent=2))
        if self.dns_server is None:
            self.servers.append(
                challtestsrv(self.workdir, self.challtest_port, self.dns_port, self.answer)
            )
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject)}
        if self.authz_reuse is not None:
            env["PEBBLE_AUTHZREUSE"] = str(self.authz_reuse)
        if self.alternate_roots:
            env["PEBBLE_ALTERNATE_ROOTS"] = str(self.alternate_roots)
        env.update(self.env)
        env = {k: v for k, v in env.items() if v}  # "" removes a default (PEBBLE_VA_NOSLEEP)
        peb = Server(
            [
                "pebble",
                "-config",
                str(self.workdir / "pebble.json"),
                "-dnsserver",
                self.dns_server or f"127.0.0.1:{self.dns_port}",
            ],
            self.workdir / "pebble.log",
            env=env,
        )
        self.servers.append(peb)
        peb.wait_until(port_open(self.host, self.port), what="ACME port")
        # the management port (issuing roots) opens on its own schedule: a busy machine
        # showed a fixture asking for the roots before it listened
        peb.wait_until(port_open(self.host, self.management_port), what="management port")
        return self

    def issuing_roots(self, index: int = 0) -> bytes:
        """pebble makes new issuing roots at every start: fetch one from /roots/N."""
        ctx = ssl.create_default_context(cafile=str(self.tls_root))
        url = f"https://{self.host}:{self.management_port}/roots/{index}"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return bytes(resp.read())

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def challtestsrv(
    workdir: Path, management_port: int, dns_port: int, answer: str = "127.0.0.1"
) -> Server:
    """pebble-challtestsrv as a DNS server only, answering `answer` for every name.

    Every listener is overridden: its defaults bind all interfaces. No AAAA answers:
    pebble dials the first AAAA answer only.
    """
    server = Server(
        [
            "pebble-challtestsrv",
            "-management",
            f"127.0.0.1:{management_port}",
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv4",
            answer,
            "-defaultIPv6",
            "",
        ],
        workdir / "challtestsrv.log",
    )
    server.wait_until(port_open("127.0.0.1", management_port), what="management port")
    return server
