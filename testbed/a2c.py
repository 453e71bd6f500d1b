"""acme2certifier (PyPI, in its own venv) as an ACME server with ARI and profiles,
signing with a CA made here (the openssl CA handler). It validates http-01 on port 80
of the name and resolves names through pebble-challtestsrv on 127.0.0.1:53, so it runs
inside the test session's private network namespace."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pki
from .pebble import challtestsrv
from .proc import Server, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "build" / "a2c-venv"
VERSION = "0.46.3"


@dataclass
class Acme2Certifier:
    workdir: Path
    validity_days: int = 30
    threshold_pctg: float = 85.0  # the ARI window opens when this share of life is gone
    profiles: dict[str, str] = field(
        default_factory=lambda: {"classic": "the default", "shortlived": "a short life"}
    )
    port: int = field(default_factory=free_port)
    servers: list[Server] = field(default_factory=list)
    dns_server: str = "127.0.0.1"  # where it resolves (port 53)
    challtestsrv: bool = True  # serve port 53 with pebble-challtestsrv; False: a BIND does
    dns_persist: bool = False  # offer dns-persist-01 (draft-ietf-acme-dns-persist)
    caa_identities: tuple[str, ...] = ("a2c.test",)  # its issuer domain names

    @property
    def directory_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/directory"

    @property
    def requests_log(self) -> Path:
        return self.workdir / "requests.jsonl"

    def requests(self) -> list[dict[str, Any]]:
        if not self.requests_log.exists():
            return []
        return [json.loads(line) for line in self.requests_log.read_text().splitlines()]

    def start(self) -> Acme2Certifier:
        python = VENV / "bin" / "python"
        if not python.exists():
            raise RuntimeError(f"{VENV} is missing: run `make a2c-venv` (`make test` does)")
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        (w / "certs").mkdir(exist_ok=True)
        root = pki.make_ca("a2c test root")
        issuing = pki.make_ca("a2c issuing ca", parent=root)
        pki.write(w / "root.pem", root.pem())
        pki.write(w / "issuing.pem", issuing.pem())
        pki.write(w / "issuing.key", pki.key_pem(issuing.key), 0o600)
        cfg = f"""\
[DEFAULT]
debug: False
dns_server_list: ["{self.dns_server}"]

[Directory]
caaidentities: {json.dumps(list(self.caa_identities))}

[Challenge]
dns_persist_01_support: {self.dns_persist}
dns_persist_allow_policy_wildcard: True

[Nonce]
nonce_check_disable: False

[CAhandler]
handler_module: acme2certifier.cahandlers.openssl_ca_handler
issuing_ca_key: {w / "issuing.key"}
issuing_ca_cert: {w / "issuing.pem"}
issuing_ca_crl: {w / "crl.pem"}
cert_save_path: {w / "certs"}
ca_cert_chain_list: ["{w / "root.pem"}"]
cert_validity_days: {self.validity_days}

[DBhandler]
handler: wsgi
dbfile: {w / "a2c.db"}

[Renewalinfo]
renewalthreshold_pctg: {self.threshold_pctg}

[Order]
profiles: {json.dumps(self.profiles)}
"""
        (w / "acme_srv.cfg").write_text(cfg)
        if self.challtestsrv:
            self.servers.append(challtestsrv(w, free_port(), 53))
        server = Server(
            [str(python), str(ROOT / "testbed" / "a2c_server.py"), str(self.port),
             str(self.requests_log)],
            w / "a2c.log",
            env={"ACME_SRV_CONFIGFILE": str(w / "acme_srv.cfg")},
            cwd=w,
        )  # fmt: skip
        self.servers.append(server)
        server.wait_until(port_open("127.0.0.1", self.port), timeout=60, what="ACME port")
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
