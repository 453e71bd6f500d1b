"""A real nginx (Debian) in a temporary prefix on a loopback port, stopped by PID.

It starts with a bootstrap certificate; certagent's deploy then replaces the
config file with a link into its release and reloads through `reload_argv`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .proc import Server, free_port, port_open


@dataclass
class Nginx:
    prefix: Path
    names: tuple[str, ...] = ("www.example.test",)
    port: int = field(default_factory=free_port)
    server: Server | None = None

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    def argv(self, *extra: str) -> list[str]:
        return ["nginx", "-p", str(self.prefix), "-c", str(self.conf), *extra]

    @property
    def reload_argv(self) -> list[str]:
        return self.argv("-s", "reload")

    @property
    def test_argv(self) -> list[str]:
        """The config-test gate: `{config}` is the candidate file inside the release."""
        return ["nginx", "-t", "-p", str(self.prefix), "-c", "{config}"]

    def template_vars(self) -> dict[str, object]:
        return {
            "listen": f"127.0.0.1:{self.port}",
            "http_listen": "",
            "pid": str(self.pid_file),
            "error_log": str(self.prefix / "error.log"),
            "access_log": str(self.prefix / "access.log"),
        }

    def _bootstrap(self) -> None:
        """A self-signed certificate for the names, served until certagent deploys one."""
        ca = pki.make_ca("bootstrap")
        cert, key = pki.issue(ca, list(self.names))
        pki.write(self.prefix / "bootstrap.pem", cert)
        pki.write(self.prefix / "bootstrap.key", key, 0o600)

    def _run(self) -> Nginx:
        self.server = Server(self.argv("-g", "daemon off;"), self.prefix / "stdout.log")
        self.server.wait_until(port_open("127.0.0.1", self.port), what=f"port {self.port}")
        return self

    def start(self) -> Nginx:
        """Serve a self-signed bootstrap certificate until certagent deploys one."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        self._bootstrap()
        self.conf.write_text(
            f"pid {self.pid_file};\nerror_log {self.prefix / 'error.log'};\n"
            "worker_shutdown_timeout 5s;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"  access_log {self.prefix / 'access.log'};\n"
            f"  server {{ listen 127.0.0.1:{self.port} ssl;\n"
            f"    ssl_certificate {self.prefix / 'bootstrap.pem'};\n"
            f"    ssl_certificate_key {self.prefix / 'bootstrap.key'};\n"
            "    location / { return 200 'bootstrap'; } }\n"
            "}\n"
        )
        return self._run()

    def start_sites(self, sites: list[tuple[int, str, Path, Path]]) -> Nginx:
        """Serve several certificates: (port, server_name, cert file, key file) each; the
        first site on a port is its default. For `check` tests and benchmarks."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        blocks = []
        for port, server_name, cert, key in sites:
            blocks.append(
                f"  server {{ listen 127.0.0.1:{port} ssl; server_name {server_name};\n"
                f"    ssl_certificate {cert}; ssl_certificate_key {key};\n"
                "    location / { return 200 'ok'; } }\n"
            )
        self.conf.write_text(
            f"pid {self.pid_file};\nerror_log {self.prefix / 'error.log'};\n"
            "worker_processes 1;\nevents { worker_connections 1024; }\n"
            f"http {{\n  access_log off;\n{''.join(blocks)}}}\n"
        )
        self.server = Server(self.argv("-g", "daemon off;"), self.prefix / "stdout.log")
        last = sites[-1][0]
        self.server.wait_until(port_open("127.0.0.1", last), what=f"port {last}")
        return self

    @property
    def sites(self) -> Path:
        return self.prefix / "sites"

    def start_including(self) -> Nginx:
        """A main nginx.conf that includes `sites/*.conf` (where certagent renders one
        server block per certificate) beside a default server with the bootstrap
        certificate: many certificates, one web server."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.sites.mkdir(exist_ok=True)
        self._bootstrap()
        self.conf.write_text(
            f"pid {self.pid_file};\nerror_log {self.prefix / 'error.log'};\n"
            "worker_processes 1;\nworker_shutdown_timeout 5s;\n"
            "events { worker_connections 256; }\n"
            "http {\n  access_log off;\n"
            f"  server {{ listen 127.0.0.1:{self.port} ssl default_server;\n"
            f"    ssl_certificate {self.prefix / 'bootstrap.pem'};\n"
            f"    ssl_certificate_key {self.prefix / 'bootstrap.key'};\n"
            "    location / { return 200 'bootstrap'; } }\n"
            f"  include {self.sites}/*.conf;\n"
            "}\n"
        )
        return self._run()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
