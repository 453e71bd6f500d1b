"""Debian's Postfix and Dovecot as private instances on loopback ports (their work
directory must be one their unprivileged users can enter, not pytest's 0700 tree): Postfix with
its own config directory (`postfix -c DIR`: SMTP with STARTTLS, submission requiring
it, SMTPS with implicit TLS), Dovecot with its own configuration (`dovecot -c FILE`:
IMAP with STARTTLS, IMAPS). Both read the certificate and key from two files certagent
links (`tls/fullchain.pem`, `tls/privkey.pem`), as the shipped mail recipe does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .proc import Server, free_port, port_open

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={"PATH": PATH})  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stdout}{done.stderr}")


@dataclass
class Mail:
    workdir: Path
    smtp: int = field(default_factory=free_port)  # STARTTLS offered
    submission: int = field(default_factory=free_port)  # STARTTLS required
    smtps: int = field(default_factory=free_port)  # implicit TLS
    imap: int = field(default_factory=free_port)  # STARTTLS
    imaps: int = field(default_factory=free_port)  # implicit TLS
    dovecot: Server | None = None
    postfix: Server | None = None

    @property
    def postfix_dir(self) -> Path:
        return self.workdir / "postfix"

    @property
    def dovecot_conf(self) -> Path:
        return self.workdir / "dovecot" / "dovecot.conf"

    @property
    def tls(self) -> Path:
        return self.workdir / "tls"

    def test_shell(self) -> str:
        """The operator's config test, for these instances: `postconf -n` (it says a
        syntax error in main.cf, with its line, on stderr; `postfix check` logs it only),
        `postfix check`, `doveconf -n`."""
        d = self.postfix_dir
        return (f"postconf -c {d} -n >/dev/null && postfix -c {d} check && "
                f"doveconf -c {self.dovecot_conf} -n >/dev/null")  # fmt: skip

    def reload_shell(self) -> str:
        """The operator's reload; Dovecot is reloaded only while it runs (it is started
        once a certificate exists)."""
        pid = self.workdir / "dovecot" / "run" / "master.pid"
        return (f"postfix -c {self.postfix_dir} reload && "
                f"{{ ! test -e {pid} || doveadm -c {self.dovecot_conf} reload; }}")  # fmt: skip

    def start_postfix(self) -> Mail:
        if shutil.which("postfix") is None:
            raise RuntimeError("postfix is missing (make deps installs Debian's postfix)")
        d = self.postfix_dir
        d.mkdir(parents=True)
        self.tls.mkdir(exist_ok=True)
        (self.workdir / "spool").mkdir()
        (self.workdir / "data").mkdir()
        shutil.chown(self.workdir / "data", "postfix", "postfix")
        (d / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.workdir / 'spool'}\n"
            f"data_directory = {self.workdir / 'data'}\n"
            "mail_owner = postfix\nsetgid_group = postdrop\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
            "myhostname = mail.example.test\nmydestination =\n"
            "alias_maps =\nalias_database =\n"
            "maillog_file = /dev/stdout\n"  # commands say their errors; the master's go to its log
            f"smtpd_tls_chain_files = {self.tls / 'privkey.pem'}, {self.tls / 'fullchain.pem'}\n"
            "smtpd_tls_security_level = may\n"
        )
        services = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if not line or line[0] in "# \t" or len(fields) < 8:
                continue
            if fields[0] in ("smtp", "submission", "smtps") and fields[1] == "inet":
                continue
            fields[4] = "n"  # no chroot: the queue directory is ours, not a prepared jail
            services.append(" ".join(fields))
        services += [
            f"127.0.0.1:{self.smtp} inet n - n - - smtpd",
            f"127.0.0.1:{self.submission} inet n - n - - smtpd "
            "-o smtpd_tls_security_level=encrypt",
            f"127.0.0.1:{self.smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes",
        ]
        (d / "master.cf").write_text("\n".join(services) + "\n")
        self.configure_dovecot()
        _run(["postfix", "-c", str(d), "check"])  # makes the queue's directories
        self.postfix = Server(["postfix", "-c", str(d), "start-fg"], self.workdir / "postfix.log",
                              env={"PATH": PATH})  # fmt: skip
        for port in (self.smtp, self.submission, self.smtps):
            self.postfix.wait_until(port_open("127.0.0.1", port), what=f"postfix on {port}")
        return self

    def configure_dovecot(self) -> None:
        """Dovecot's configuration: written with Postfix's, started once the files exist."""
        if shutil.which("dovecot") is None:
            raise RuntimeError("dovecot is missing (make deps installs dovecot-imapd)")
        base = self.dovecot_conf.parent
        for sub in ("run", "state", "mail"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(base / "mail", 0o1777)  # noqa: S103 - a test mail spool, as /var/mail is
        self.dovecot_conf.write_text(
            f"base_dir = {base / 'run'}\nstate_dir = {base / 'state'}\n"
            f"log_path = {base / 'dovecot.log'}\n"
            "protocols = imap\nlisten = 127.0.0.1\nssl = yes\n"
            f"ssl_cert = <{self.tls / 'fullchain.pem'}\nssl_key = <{self.tls / 'privkey.pem'}\n"
            "default_login_user = dovenull\ndefault_internal_user = dovecot\n"
            f"mail_location = maildir:{base / 'mail'}/%u\n"
            "passdb {\n  driver = static\n  args = password=unused\n}\n"
            f"userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={base}\n}}\n"
            "service imap-login {\n"
            f"  inet_listener imap {{\n    port = {self.imap}\n  }}\n"
            f"  inet_listener imaps {{\n    port = {self.imaps}\n    ssl = yes\n  }}\n}}\n"
        )

    def start_dovecot(self) -> Mail:
        base = self.dovecot_conf.parent
        self.dovecot = Server(["dovecot", "-F", "-c", str(self.dovecot_conf)],
                              base / "dovecot.out")  # fmt: skip
        for port in (self.imap, self.imaps):
            self.dovecot.wait_until(port_open("127.0.0.1", port), what=f"dovecot on {port}")
        return self

    def stop(self) -> None:
        if self.dovecot is not None:
            self.dovecot.stop()
            self.dovecot = None
        if self.postfix is not None:
            self._stop_master()
            self.postfix.stop()
            self.postfix = None

    def _stop_master(self, timeout: float = 10.0) -> None:
        """Postfix's master makes a session of its own (setsid under `start-fg`), out
        of the process group the Server helper stops: it is stopped by the PID in its
        pid file, once that PID is seen to be our master (its cwd is our spool)."""
        spool = self.workdir / "spool"
        try:
            pid = int((spool / "pid" / "master.pid").read_text().split()[0])
            if Path(f"/proc/{pid}/cwd").resolve() != spool.resolve():
                return  # not ours (gone, and its PID reused)
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            return
        deadline = time.monotonic() + timeout
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an init that does not reap leaves those)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
