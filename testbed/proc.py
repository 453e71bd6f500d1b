"""Start a server process, wait for a condition, stop it by PID (never pkill)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class Server:
    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        child_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        child_env.update(env or {})
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=_group_of(user) if user else None,
            extra_groups=_groups_of(user) if user else None,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_until(self, ready: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
        """Poll a readiness condition; fail early with the log if the process died. A
        server that never became ready is stopped (by its PID) before the error: the
        fixture that started it never gets it back to stop."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log()}"
                )
            if ready():
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        log = self.log()
        self.stop()
        raise RuntimeError(f"{self.argv[0]} not ready ({what}) after {timeout}s:\n{log}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server, then wait until its whole process group is gone.

        The group is the one this helper created (start_new_session), so its id is
        the server's PID: worker processes still shutting down are waited for too.
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + timeout
        killed = False
        while _group_alive(self.proc.pid):
            now = time.monotonic()
            if now > deadline + timeout:
                break  # only unreaped zombies can be left (an init that does not reap)
            if now > deadline and not killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.01)
        self._log.close()


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def _groups_of(user: str) -> list[int]:
    """The user's supplementary groups, as systemd's `User=` (initgroups) gives a
    service: Debian's PostgreSQL reads keys through its membership of ssl-cert."""
    return os.getgrouplist(user, _group_of(user))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            return False

    return check
