"""A real two-node keepalived cluster in network namespaces, for the failover tests.

    LAN namespace: bridge br0, one veth port per member (nothing in the root namespace)
    n1 (10.77.0.11)  keepalived priority 150, nginx, certagent (the MASTER)
    n2 (10.77.0.12)  keepalived priority 100, nginx, sshd: the peer, reached over the LAN
    cl (10.77.0.20)  a client probing the VIP every 20 ms
    this process     10.77.0.1 on the LAN: pebble listens here and validates on the VIP

The caller is already in a private network namespace (tests/conftest.py), so joining
it to the LAN touches nothing on the host. Every process is started with
`ip netns exec` and stopped by PID; `stop()` deletes the namespaces it made.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pki
from .proc import Server, port_open

PREFIX = "10.77.0"
VIP = f"{PREFIX}.10"
HOST = f"{PREFIX}.1"
NAME = "www.example.test"
ROOT = Path(__file__).resolve().parent.parent
CERTAGENT = [sys.executable, "-m", "certagent"]
_serial = itertools.count(1)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class Node:
    name: str  # the namespace
    address: str
    priority: int
    dir: Path
    keepalived: Server | None = None
    nginx: Server | None = None
    sshd: Server | None = None

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    @property
    def nginx_conf(self) -> Path:
        return self.dir / "nginx" / "nginx.conf"

    @property
    def nginx_pid(self) -> Path:
        return self.dir / "nginx" / "nginx.pid"

    @property
    def keepalived_pid(self) -> Path:
        return self.dir / "keepalived.pid"

    @property
    def dump_dir(self) -> Path:
        return self.dir / "tmp"

    @property
    def config(self) -> Path:
        return self.dir / "certagent.yaml"

    @property
    def fault_flag(self) -> Path:
        return self.dir / "fault"

    def nginx_argv(self, *extra: str) -> list[str]:
        return ["nginx", "-p", str(self.dir / "nginx"), "-c", str(self.nginx_conf), *extra]

    def certagent(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """certagent on this node, as cron would run it (inside the node's namespace)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        return subprocess.run(
            self.exec(*CERTAGENT, "-c", str(self.config), *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=ROOT,
            check=False,
        )

    def vrrp_state(self, instance: str = "VI_1") -> str:
        """INIT, BACKUP, MASTER or FAULT, read from a fresh keepalived dump."""
        from certagent import keepalived, system

        where = keepalived.Where(self.name, (), str(self.keepalived_pid), str(self.dump_dir))
        return keepalived.dump(where, system.run, 2.0)[instance].state.name

    def vrrp_priority(self) -> int:
        """The effective priority (lowered by a failing track script's weight)."""
        from certagent import keepalived, system

        where = keepalived.Where(self.name, (), str(self.keepalived_pid), str(self.dump_dir))
        return keepalived.dump(where, system.run, 2.0)["VI_1"].priority

    def holds_vip(self) -> bool:
        out = subprocess.run(
            ["ip", "-n", self.name, "-o", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return f" {VIP}/" in out

    def nginx_alive(self) -> int | None:
        try:
            pid = int(self.nginx_pid.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid


@dataclass
class Cluster:
    workdir: Path
    tag: str = field(default_factory=lambda: f"ca{os.getpid() % 100000}x{next(_serial)}")
    nodes: list[Node] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    ca: pki.Authority | None = None
    vip2: str | None = None  # a second VRRP instance VI_2 on this VIP, n2 its MASTER

    @property
    def lan(self) -> str:
        return f"{self.tag}lan"

    @property
    def client(self) -> str:
        return f"{self.tag}cl"

    @property
    def master(self) -> Node:
        return self.nodes[0]

    @property
    def backup(self) -> Node:
        return self.nodes[1]

    @property
    def bootstrap_root(self) -> Path:
        return self.workdir / "bootstrap-root.pem"

    @property
    def client_key(self) -> Path:
        return self.workdir / "ssh" / "client"

    # -- network --------------------------------------------------------------------------

    def start_network(self) -> Cluster:
        self._netns(self.lan)
        ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        ip("-n", self.lan, "link", "set", "br0", "up")
        for i, prio in ((11, 150), (12, 100)):
            node = Node(f"{self.tag}n{i - 10}", f"{PREFIX}.{i}", prio, self.workdir / f"n{i - 10}")
            node.dir.mkdir(parents=True)
            node.dump_dir.mkdir(mode=0o700)
            self._member(node.name, node.address)
            # nginx listens on the VIP even where keepalived has not put it (yet)
            ip("netns", "exec", node.name, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")
            self.nodes.append(node)
        self._member(self.client, f"{PREFIX}.20")
        # this process joins the LAN too (its own private namespace, by PID)
        ip("-n", self.lan, "link", "add", "vhost", "type", "veth", "peer", "name", "lan0",
           "netns", str(os.getpid()))  # fmt: skip
        ip("-n", self.lan, "link", "set", "vhost", "master", "br0", "up")
        ip("addr", "add", f"{HOST}/24", "dev", "lan0")
        ip("link", "set", "lan0", "up")
        return self

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _member(self, ns: str, address: str) -> None:
        self._netns(ns)
        port = f"v{ns[-2:]}"
        ip("-n", self.lan, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", ns)  # fmt: skip
        ip("-n", self.lan, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    def partition(self, node: Node, cut: bool = True) -> None:
        """Take the node's bridge port down (or up again): the LAN no longer reaches it."""
        ip("-n", self.lan, "link", "set", f"v{node.name[-2:]}", "down" if cut else "up")

    # -- servers ---------------------------------------------------------------------------

    def start_nginx(self, node: Node) -> None:
        """Serve a bootstrap certificate (from our own CA) on the VIP and the node address."""
        if self.ca is None:
            self.ca = pki.make_ca("cluster bootstrap root")
            pki.write(self.bootstrap_root, self.ca.pem())
        prefix = node.dir / "nginx"
        prefix.mkdir(exist_ok=True)
        cert, key = pki.issue(self.ca, [NAME])
        pki.write(prefix / "bootstrap.pem", cert)
        pki.write(prefix / "bootstrap.key", key, 0o600)
        node.nginx_conf.write_text(
            f"pid {node.nginx_pid};\nerror_log {prefix / 'error.log'};\n"
            "worker_processes 1;\nworker_shutdown_timeout 5s;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"  access_log off;\n"
            f"  server {{ listen {VIP}:443 ssl; listen {node.address}:443 ssl;\n"
            f"    server_name {NAME};\n"
            f"    ssl_certificate {prefix / 'bootstrap.pem'};\n"
            f"    ssl_certificate_key {prefix / 'bootstrap.key'};\n"
            "    location / { return 200 'bootstrap'; } }\n"
            "}\n"
        )
        node.nginx = Server(node.exec(*node.nginx_argv("-g", "daemon off;")), prefix / "stdout.log")
        node.nginx.wait_until(port_open(node.address, 443), what=f"nginx on {node.address}")

    def stop_nginx(self, node: Node) -> None:
        """Stop the fixture's nginx, and one a hook started by itself (by its pid file)."""
        if node.nginx is not None:
            node.nginx.stop()
            node.nginx = None
        pid = node.nginx_alive()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait(lambda: _gone(pid), 10, f"nginx {pid} to exit")

    def keepalived_conf(self, node: Node, vip: str = VIP) -> str:
        health = " ".join([*CERTAGENT, "-c", str(node.config), "health", "--timeout", "1"])
        return (
            "global_defs {\n"
            "  script_user root\n"  # first: a reload drops every script otherwise
            f"  router_id {node.name}\n"
            "  vrrp_version 3\n"
            "}\n"
            "vrrp_script certagent_health {\n"
            f'  script "{health}"\n'
            # The README's recommendation: a failing node drops below its peer (150 - 60
            # < 100), a failure common to both keeps the order and the VIP where it is.
            "  interval 1\n  timeout 5\n  weight -60\n  fall 1\n  rise 1\n"
            "}\n"
            "vrrp_track_file fault_flag {\n"
            f'  file "{node.fault_flag}"\n'
            "  weight 0\n  init_file 0 overwrite\n"
            "}\n"
            "vrrp_instance VI_1 {\n"
            "  state BACKUP\n  interface eth0\n  virtual_router_id 51\n"
            f"  priority {node.priority}\n  advert_int 0.1\n"
            f"  virtual_ipaddress {{\n    {vip}/24\n  }}\n"
            "  track_script {\n    certagent_health\n  }\n"
            "  track_file {\n    fault_flag\n  }\n"
            "}\n" + self._second_instance(node)
        )

    def _second_instance(self, node: Node) -> str:
        """VI_2 (VRID 52) with the priorities the other way round: n2 is its MASTER."""
        if self.vip2 is None:
            return ""
        return (
            "vrrp_instance VI_2 {\n"
            "  state BACKUP\n  interface eth0\n  virtual_router_id 52\n"
            f"  priority {250 - node.priority}\n  advert_int 0.1\n"
            f"  virtual_ipaddress {{\n    {self.vip2}/24\n  }}\n"
            "}\n"
        )

    def start_keepalived(self, node: Node, vip: str = VIP) -> None:
        conf = node.dir / "keepalived.conf"
        conf.write_text(self.keepalived_conf(node, vip))
        pids = [f"{node.dir / k}.pid" for k in ("vrrp", "checkers", "bfd")]
        argv = node.exec(
            "env", f"TMPDIR={node.dump_dir}",
            "keepalived", "--vrrp", "--dont-fork", "--log-console", "--no-syslog",
            "-i", node.name, "-f", str(conf), "-p", str(node.keepalived_pid),
            "-r", pids[0], "-c", pids[1], "-b", pids[2],
        )  # fmt: skip
        node.keepalived = Server(argv, node.dir / "keepalived.log")
        node.keepalived.wait_until(node.keepalived_pid.exists, what="keepalived pid file")

    def stop_keepalived(self, node: Node) -> None:
        if node.keepalived is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.keepalived.pid, signal.SIGCONT)  # a frozen one cannot exit
            node.keepalived.stop()
            node.keepalived = None

    def wait_roles(self, timeout: float = 15) -> None:
        """Until n1 is MASTER (holding the VIP) and n2 a BACKUP that hears it (and, with
        a second instance, the other way round for VI_2)."""

        def settled() -> bool:
            try:
                first = (
                    self.master.holds_vip()
                    and self.master.vrrp_state() == "MASTER"
                    and self.backup.vrrp_state() == "BACKUP"
                )
                if not first or self.vip2 is None:
                    return first
                return (
                    self.backup.vrrp_state("VI_2") == "MASTER"
                    and self.master.vrrp_state("VI_2") == "BACKUP"
                )
            except Exception:
                return False

        wait(settled, timeout, "n1 MASTER and n2 BACKUP")

    def start_sshd(self, node: Node) -> None:
        """A real sshd in the peer's namespace, root by key only; host key pinned."""
        ssh = self.workdir / "ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        for key in ("host", "client"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / key)],
                check=True,
                timeout=30,
            )
        (ssh / "authorized_keys").write_text((ssh / "client.pub").read_text())
        (ssh / "authorized_keys").chmod(0o600)
        host_pub = " ".join((ssh / "host.pub").read_text().split()[:2])
        (ssh / "known_hosts").write_text(f"{node.address} {host_pub}\n")
        (ssh / "sshd_config").write_text(
            f"ListenAddress {node.address}:22\n"
            f"HostKey {ssh / 'host'}\n"
            f"PidFile {ssh / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nPrintMotd no\n"
            # the keys live under /tmp (sticky, world-writable), which StrictModes refuses
            "StrictModes no\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        node.sshd = Server(
            node.exec("/usr/sbin/sshd", "-D", "-e", "-f", str(ssh / "sshd_config")),
            ssh / "sshd.log",
        )
        node.sshd.wait_until(port_open(node.address, 22), what="sshd")

    def ssh_prefix(self, node: Node) -> list[str]:
        ssh = self.workdir / "ssh"
        return [
            "ssh", "-F", "/dev/null", "-i", str(ssh / "client"),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={ssh / 'known_hosts'}",
            "-o", "ConnectTimeout=2", "-o", "ServerAliveInterval=1",
            "-o", "ServerAliveCountMax=2", f"root@{node.address}",
        ]  # fmt: skip

    def start_probe(self, out: Path, roots: list[Path]) -> Server:
        """The client namespace's probe of the VIP, every 20 ms, into a JSON-lines file."""
        argv = [
            "ip", "netns", "exec", self.client, sys.executable, "-m", "testbed.vipprobe",
            "--host", VIP, "--sni", NAME, "--out", str(out),
            *[a for r in roots for a in ("--cafile", str(r))],
        ]  # fmt: skip
        server = Server(argv, out.with_suffix(".log"), cwd=ROOT)
        self.servers.append(server)
        server.wait_until(lambda: out.exists() and out.stat().st_size > 0, what="first probe")
        return server

    # -- teardown ----------------------------------------------------------------------------

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()
        for node in self.nodes:
            self.stop_keepalived(node)
            self.stop_nginx(node)
            if node.sshd is not None:
                node.sshd.stop()
                node.sshd = None
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", "lan0")
        for ns in reversed(self.namespaces):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", ns)
        self.namespaces.clear()


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaps counts: it serves nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def read_probes(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
