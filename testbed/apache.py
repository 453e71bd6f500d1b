"""Debian's apache2 as a private instance in the Debian layout: a copy of /etc/apache2
(apache2.conf, ports.conf, mods-/sites-/conf-available and -enabled, envvars) under a
work directory, run with APACHE_CONFDIR the way Debian's own multi-instance support
does, so `apache2ctl -t` and `apache2ctl graceful` are the operator's commands. It
listens on one loopback port with mod_ssl enabled and no default site.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .proc import Server, free_port, port_open

SSL_MODULES = ("ssl.load", "ssl.conf", "socache_shmcb.load")


@dataclass
class Apache:
    workdir: Path
    port: int = field(default_factory=free_port)
    server: Server | None = None

    @property
    def confdir(self) -> Path:
        return self.workdir / "apache2"

    @property
    def env(self) -> dict[str, str]:
        """What the operator's commands need to address this instance."""
        return {"APACHE_CONFDIR": str(self.confdir)}

    @property
    def sites(self) -> Path:
        return self.confdir / "sites-enabled"

    def command(self, *args: str) -> dict[str, object]:
        """A certagent command (mapping form) running apache2ctl on this instance."""
        return {"argv": ["apache2ctl", *args], "env": self.env, "timeout": 30}

    def start(self) -> Apache:
        if shutil.which("apache2") is None:
            raise RuntimeError("apache2 is missing (make deps installs Debian's apache2)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree("/etc/apache2", self.confdir, symlinks=True)
        run = self.workdir / "run"
        for d in (run, self.workdir / "lock", self.workdir / "log"):
            d.mkdir(exist_ok=True)
        envvars = self.confdir / "envvars"
        envvars.write_text(
            envvars.read_text()
            + f"\nexport APACHE_PID_FILE={run}/apache2.pid\nexport APACHE_RUN_DIR={run}\n"
            f"export APACHE_LOCK_DIR={self.workdir}/lock\n"
            f"export APACHE_LOG_DIR={self.workdir}/log\n"
        )
        (self.confdir / "ports.conf").write_text(f"Listen 127.0.0.1:{self.port}\n")
        for default in self.sites.iterdir():
            default.unlink()
        for module in SSL_MODULES:
            link = self.confdir / "mods-enabled" / module
            if not link.exists():
                link.symlink_to(f"../mods-available/{module}")
        (self.confdir / "conf-enabled" / "servername.conf").write_text(
            "ServerName localhost\n"
        )
        self.server = Server(
            ["sh", "-c", f". {envvars} && exec apache2 -d {self.confdir} -DFOREGROUND"],
            self.workdir / "apache2.out",
            env=self.env,
        )
        self.server.wait_until(port_open("127.0.0.1", self.port), what="apache2")
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
