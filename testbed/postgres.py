"""A real PostgreSQL (Debian) with `ssl = on`, in a temporary directory, stopped by PID.

initdb and postgres refuse to run as root: both run as the `postgres` user that the
Debian package creates, through runuser. The certificate is swapped by rewriting the
files and sending SIGHUP (PostgreSQL reloads its SSL settings on reload).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .proc import Server, free_port, port_open


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make deps`")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    workdir: Path  # every parent must be enterable by the postgres user (e.g. mkdtemp)
    port: int = field(default_factory=free_port)
    server: Server | None = None

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv]

    def _chown(self, path: Path) -> None:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def install_cert(self, cert_pem: bytes, key_pem: bytes) -> None:
        for name, data, mode in (("server.crt", cert_pem, 0o644), ("server.key", key_pem, 0o600)):
            path = self.data / name
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(mode)
            self._chown(tmp)
            tmp.replace(path)

    def start(self, cert_pem: bytes, key_pem: bytes) -> Postgres:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o711)  # the postgres user must reach its data directory below
        self.data.mkdir(mode=0o700)
        self._chown(self.data)
        subprocess.run(
            self._as_postgres([str(bindir() / "initdb"), "-D", str(self.data), "-A", "trust"]),
            check=True,
            capture_output=True,
        )
        self.install_cert(cert_pem, key_pem)
        argv = [
            str(bindir() / "postgres"),
            "-D",
            str(self.data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.data}",
            "-c",
            "ssl=on",
        ]
        log = self.workdir / "postgres.log"
        self.server = Server(argv, log, user="postgres")
        self.server.wait_until(port_open("127.0.0.1", self.port), what=f"port {self.port}")
        return self

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the postmaster by the PID it wrote itself."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        os.kill(pid, sig)

    def reload(self) -> None:
        """PostgreSQL reloads its SSL files on SIGHUP."""
        self._signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        shutil.rmtree(self.data, ignore_errors=True)
