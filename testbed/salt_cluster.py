"""A real Salt master and minions on loopback (the pinned Salt in build/salt-venv), each
with its own id, configuration, pki, cache and socket directories, keys accepted by
the test bed, stopped by PID.

Every minion gets its own certagent configuration through CERTAGENT_CONFIG in its
environment (the execution module reads it), and the grains it is given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .proc import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
SALT_BIN = ROOT / "build" / "salt-venv" / "bin"


@dataclass
class SaltMinion:
    id: str
    certagent_config: Path
    grains: dict[str, Any] = field(default_factory=dict)
    server: Server | None = None


@dataclass
class SaltCluster:
    workdir: Path
    publish_port: int = field(default_factory=free_port)
    ret_port: int = field(default_factory=free_port)
    minions: list[SaltMinion] = field(default_factory=list)
    master: Server | None = None
    started: float = 0.0  # seconds the start took
    sockets: Path | None = None

    @property
    def master_conf(self) -> Path:
        return self.workdir / "master-conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{SALT_BIN}:{os.environ['PATH']}"}

    def _dirs(self, name: str) -> dict[str, str]:
        base = self.workdir / name
        if self.sockets is None:  # unix socket paths must stay short (108 bytes)
            self.sockets = Path(tempfile.mkdtemp(prefix="salt-", dir="/tmp"))
        return {
            "root_dir": str(base / "root"),
            "pki_dir": str(base / "pki"),
            "cachedir": str(base / "cache"),
            "sock_dir": str(self.sockets / name),
            "log_file": str(base / "log"),
            "log_level_logfile": "info",
            "user": "root",
        }

    def start(self, minions: list[SaltMinion]) -> SaltCluster:
        try:
            return self._start(minions)
        except BaseException:
            self.stop()  # nothing left running when the start fails
            raise

    def _start(self, minions: list[SaltMinion]) -> SaltCluster:
        start = time.monotonic()
        self.minions = minions
        self.master_conf.mkdir(parents=True)
        master = {
            **self._dirs("master"),
            "interface": "127.0.0.1",
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            "worker_threads": 3,
            "auto_accept": False,
            "enable_fqdns_grains": False,
            "file_roots": {"base": [str(self.workdir / "srv")]},
            "pidfile": str(self.workdir / "master.pid"),
        }
        (self.master_conf / "master").write_text(json.dumps(master))
        self.master = Server(
            [str(SALT_BIN / "salt-master"), "-c", str(self.master_conf)],
            self.workdir / "master.out",
            env=self.env(),
        )
        for m in minions:
            conf = self.workdir / f"{m.id}-conf"
            conf.mkdir()
            cfg = {
                **self._dirs(m.id),
                "id": m.id,
                "master": "127.0.0.1",
                "master_port": self.ret_port,
                "publish_port": self.publish_port,
                "grains": m.grains,
                "enable_fqdns_grains": False,
                "acceptance_wait_time": 1,
                "acceptance_wait_time_max": 1,
                "random_reauth_delay": 0,
                "pidfile": str(self.workdir / f"{m.id}.pid"),
            }
            (conf / "minion").write_text(json.dumps(cfg))
            env = {**self.env(), "CERTAGENT_CONFIG": str(m.certagent_config)}
            m.server = Server(
                [str(SALT_BIN / "salt-minion"), "-c", str(conf)],
                self.workdir / f"{m.id}.out",
                env=env,
            )
        ids = {m.id for m in minions}
        self.master.wait_until(
            lambda: ids <= set(self._keys("minions_pre")) | set(self._keys("minions")),
            timeout=60,
            what="minion keys",
        )
        self.salt_key("-A", "-y")
        self.master.wait_until(lambda: ids <= self.ping(), timeout=60, what="minions answering")
        self.started = time.monotonic() - start
        return self

    def peak_rss(self) -> dict[str, int]:
        """Peak RSS (MiB, VmHWM) of the largest process of the master and each minion."""
        out = {}
        for name, server in [("master", self.master)] + [(m.id, m.server) for m in self.minions]:
            if server is None:
                continue
            peak = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.getpgid(int(pid)) != server.pid:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except (OSError, ProcessLookupError):
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) // 1024)
            out[name] = peak
        return out

    def accepted_keys(self) -> Path:
        """The master's accepted minion keys (Salt puts its paths under root_dir)."""
        d = self._dirs("master")
        return Path(d["root_dir"]) / d["pki_dir"].lstrip("/") / "minions"

    def _keys(self, kind: str) -> list[str]:
        out = self.salt_key("-L", "--out=json")
        try:
            keys: list[str] = json.loads(out).get(kind, [])
        except ValueError:
            return []
        return keys

    def salt_key(self, *args: str) -> str:
        return subprocess.run(
            [str(SALT_BIN / "salt-key"), "-c", str(self.master_conf), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
            timeout=60,
        ).stdout

    def ping(self) -> set[str]:
        out = self.salt("*", "test.ping", "--timeout=5")
        try:
            return {k for k, v in json.loads(out.stdout or "{}").items() if v is True}
        except ValueError:
            return set()

    def salt(self, tgt: str, fun: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(SALT_BIN / "salt"),
                "-c",
                str(self.master_conf),
                "--out=json",
                "--static",
                tgt,
                fun,
                *args,
            ],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
            timeout=300,
        )

    def run(self, fun: str, *args: str) -> subprocess.CompletedProcess[str]:
        """salt-run on the master (the runner's return code is its exit status)."""
        return subprocess.run(
            [str(SALT_BIN / "salt-run"), "-c", str(self.master_conf), "--out=json", fun, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
            timeout=600,
        )

    def stop(self) -> None:
        for m in self.minions:
            if m.server is not None:
                m.server.stop()
                m.server = None
        if self.master is not None:
            self.master.stop()
            self.master = None
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.sockets = None
