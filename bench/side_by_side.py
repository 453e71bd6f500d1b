"""certagent beside certbot, lego and a tight `acme` client, on one local pebble
(`make bench`; issue #16). Prints one table: wall seconds (best of ROUNDS), the ratio to
certagent, and peak RSS; and the CA's ceiling measured in the same run (4 tight
clients at once).

pebble runs always-valid and without its validation sleep, so the figures are the
clients' own cost (and the CA's); a second part gives pebble a validation latency of
up to 1 s per authorization, like a real CA, to show what concurrency buys.

Usage: bench/side_by_side.py [--quick]   (--quick: fewer rounds, no 200)
Needs: pebble, certbot, lego, nginx (Debian packages; `make deps` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed.nginx import Nginx  # noqa: E402
from testbed.pebble import Pebble  # noqa: E402
from tests.fakes import LocalIssuer  # noqa: E402

QUICK = "--quick" in sys.argv
ROUNDS = 1 if QUICK else 3
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
INSTALLED = ROOT / "build" / "bench-venv"  # certagent as users run it: the wheel, installed
WHEELHOUSE = ROOT / "build" / "wheelhouse"  # `make wheelhouse`


def install() -> list[str]:
    """The `certagent` command of this checkout's wheel in a venv of its own (its .pyc
    compiled at install, no editable finder): what an installed certagent costs."""
    if not (INSTALLED / "bin" / "python").exists():
        subprocess.run([PY, "-m", "venv", str(INSTALLED)], check=True)
    pip = [str(INSTALLED / "bin" / "pip"), "install", "-q", "--no-index", "--find-links"]
    subprocess.run([*pip, str(WHEELHOUSE), "--force-reinstall", "--no-deps", str(ROOT)],
                   check=True)  # fmt: skip
    subprocess.run([*pip, str(WHEELHOUSE), str(ROOT)], check=True)  # its dependencies
    return [str(INSTALLED / "bin" / "certagent")]


CERTAGENT: list[str] = []  # set by main(): the installed command
PLAIN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def timed(
    argv: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, which must end with `ok`."""
    with tempfile.NamedTemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", out.name, *argv],
            capture_output=True,
            text=True,
            env=env or ENV,
            check=False,
        )
        wall = time.monotonic() - start
        if proc.returncode not in ok:
            raise RuntimeError(f"{argv[:3]} exit {proc.returncode}: {proc.stderr[-1500:]}")
        rss = int(Path(out.name).read_text().split()[-1]) / 1024
    return wall, rss


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return min(r[0] for r in runs), max(r[1] for r in runs)


class Bench:
    def __init__(self, work: Path, pebble: Pebble) -> None:
        self.work, self.pebble = work, pebble
        self.rows: list[tuple[str, str, float, float]] = []

    def add(self, work: str, who: str, result: tuple[float, float]) -> None:
        self.rows.append((work, who, *result))
        print(f"  {work:34} {who:12} {result[0]:8.2f} s {result[1]:6.0f} MiB", flush=True)

    # -- certagent ---------------------------------------------------------------------

    def certagent_config(self, name: str, count: int, extra: str = "") -> Path:
        folder = self.work / name
        folder.mkdir(exist_ok=True)
        lines = [
            f"state_dir: {folder / 'state'}",
            "ca:",
            f"  directory: {self.pebble.directory_url}",
            "  agree_tos: true",
            f"  trust_roots: [{self.pebble.tls_root}]",
            "  max_new_orders: 1000000  # a local pebble: no public CA's per-account limit",
            extra,
            "certificates:",
        ]
        for i in range(count):
            lines += [
                f"  c{i}:",
                f"    names: [c{i}.{name}.bench.test]",
                "    challenge:",
                "      type: http-01",
                f"      standalone: {{address: 127.0.0.1, port: {self.pebble.http_port}}}",
            ]
        path = folder / "certagent.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def certagent(self, cfg: Path, *args: str) -> tuple[float, float]:
        return timed([*CERTAGENT, "-c", str(cfg), "-q", *args], PLAIN_ENV)

    # -- certbot -----------------------------------------------------------------------

    def certbot(self, folder: Path, *args: str) -> tuple[float, float]:
        env = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.tls_root)}
        base = [
            "certbot",
            "--config-dir",
            str(folder),
            "--work-dir",
            str(folder / "w"),
            "--logs-dir",
            str(folder / "l"),
            "--non-interactive",
            "--quiet",
        ]
        return timed([*base, *args], env)

    def certbot_issue(self, folder: Path, name: str) -> tuple[float, float]:
        return self.certbot(
            folder,
            "certonly",
            "--standalone",
            "--http-01-port",
            str(self.pebble.http_port),
            "--http-01-address",
            "127.0.0.1",
            "--server",
            self.pebble.directory_url,
            "--agree-tos",
            "--register-unsafely-without-email",
            "-d",
            name,
        )

    # -- lego --------------------------------------------------------------------------

    def lego(self, folder: Path, name: str, *args: str) -> tuple[float, float]:
        env = {**os.environ, "LEGO_CA_CERTIFICATES": str(self.pebble.tls_root)}
        base = [
            "lego",
            "--server",
            self.pebble.directory_url,
            "--accept-tos",
            "--email",
            "bench@example.test",
            "--path",
            str(folder),
            "--http",
            "--http.port",
            f"127.0.0.1:{self.pebble.http_port}",
            "-d",
            name,
        ]
        return timed([*base, *args], env)

    def lego_each(self, folder: Path, names: list[str], *args: str) -> tuple[float, float]:
        runs = [self.lego(folder, n, *args) for n in names]
        return sum(r[0] for r in runs), max(r[1] for r in runs)

    # -- the floor -----------------------------------------------------------------------

    def tight(self, count: int, clients: int, tag: str) -> tuple[float, float]:
        argv = [
            PY,
            str(ROOT / "bench" / "tight_client.py"),
            self.pebble.directory_url,
            str(self.pebble.tls_root),
            str(count // clients),
        ]
        start = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            runs = list(pool.map(lambda i: timed([*argv, f"{tag}{i}"]), range(clients)))
        return time.monotonic() - start, max(r[1] for r in runs)


def main() -> int:
    for tool in ("pebble", "certbot", "lego", "nginx"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (make deps installs it)", file=sys.stderr)
            return 1
    CERTAGENT[:] = install()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pebble = Pebble(work / "pebble", env={"PEBBLE_VA_ALWAYS_VALID": "1"}).start()
        try:
            bench = Bench(work, pebble)
            run_all(bench, work)
        finally:
            pebble.stop()
        print_table(bench)
        latency(work)
    return 0


def run_all(b: Bench, work: Path) -> None:
    print("one certificate, new", flush=True)
    b.add(
        "one certificate",
        "certagent",
        best([b.certagent(b.certagent_config(f"one{r}", 1), "renew") for r in range(ROUNDS)]),
    )
    b.add(
        "one certificate",
        "certbot",
        best([b.certbot_issue(work / f"cb1-{r}", f"one{r}.cb.bench.test") for r in range(ROUNDS)]),
    )
    b.add(
        "one certificate",
        "lego",
        best([b.lego(work / f"lg1-{r}", f"one{r}.lg.bench.test", "run") for r in range(ROUNDS)]),
    )
    b.add("one certificate", "tight", best([b.tight(1, 1, f"one{r}") for r in range(ROUNDS)]))

    print("50 certificates: issue, then forced renewals", flush=True)
    cfg50 = b.certagent_config("fifty", 50)
    b.certagent(cfg50, "renew")
    b.add(
        "50 forced renewals",
        "certagent",
        best([b.certagent(cfg50, "renew", "--force") for _ in range(ROUNDS)]),
    )
    cb = work / "cb50"
    for i in range(50):
        b.certbot_issue(cb, f"c{i}.cb50.bench.test")
    b.add(
        "50 forced renewals",
        "certbot",
        b.certbot(cb, "renew", "--force-renewal", "--no-random-sleep-on-renew"),
    )
    lg = work / "lg50"
    names = [f"c{i}.lg50.bench.test" for i in range(50)]
    for n in names:
        b.lego(lg, n, "run")
    b.add(
        "50 forced renewals",
        "lego",
        b.lego_each(lg, names, "renew", "--days", "99999", "--no-random-sleep"),
    )
    b.add("50 forced renewals", "tight", best([b.tight(50, 1, f"f{r}") for r in range(ROUNDS)]))
    b.add(
        "50 orders, CA ceiling", "4 x tight", best([b.tight(48, 4, f"c{r}") for r in range(ROUNDS)])
    )

    print("no-op runs", flush=True)
    b.add("no-op over 50", "certagent", best([b.certagent(cfg50, "renew") for _ in range(ROUNDS)]))
    b.add(
        "no-op over 50",
        "certbot",
        best([b.certbot(cb, "renew", "--no-random-sleep-on-renew") for _ in range(ROUNDS)]),
    )
    b.add("no-op over 50", "lego", b.lego_each(lg, names, "renew", "--no-random-sleep"))
    b.add(
        "status over 50", "certagent", best([b.certagent(cfg50, "status") for _ in range(ROUNDS)])
    )
    b.add("status over 50", "certbot", best([b.certbot(cb, "certificates") for _ in range(ROUNDS)]))

    if not QUICK:
        cfg200 = b.certagent_config("twohundred", 200)
        b.certagent(cfg200, "renew")
        b.add(
            "200 forced renewals",
            "certagent",
            best([b.certagent(cfg200, "renew", "--force") for _ in range(ROUNDS)]),
        )
        b.add(
            "200 forced renewals", "tight", best([b.tight(200, 1, f"t{r}") for r in range(ROUNDS)])
        )

    print("1000 certificates (issued by a local CA into the store: no-op and status)", flush=True)
    cfg1000 = thousand(work)
    b.certagent(cfg1000, "renew")  # fills the index
    b.add(
        "no-op over 1000", "certagent", best([b.certagent(cfg1000, "renew") for _ in range(ROUNDS)])
    )
    b.add(
        "status over 1000",
        "certagent",
        best([b.certagent(cfg1000, "status") for _ in range(ROUNDS)]),
    )
    b.add(
        "plan over 1000", "certagent", best([b.certagent(cfg1000, "plan") for _ in range(ROUNDS)])
    )
    b.add("--help", "certagent", best([timed([*CERTAGENT, "--help"], PLAIN_ENV) for _ in range(5)]))
    b.add("--help", "certbot", best([timed(["certbot", "--help"]) for _ in range(3)]))
    b.add("--help", "lego", best([timed(["lego", "--help"]) for _ in range(3)]))

    print("certificates renewed and deployed to one nginx", flush=True)
    for count, group in ((20, True), (20, False), (100, True)):
        nginx = Nginx(work / f"nginx-{count}-{group}").start_including()
        try:
            cfg = deploy_config(b, nginx, count, group)
            b.certagent(cfg, "renew")
            who = "certagent" if group else "group: false"
            b.add(
                f"{count} deployed to one nginx",
                who,
                best([b.certagent(cfg, "renew", "--force") for _ in range(ROUNDS)]),
            )
        finally:
            nginx.stop()


def thousand(work: Path) -> Path:
    """1000 certificates with releases in the store, issued by a local CA (the CA is not
    what a no-op run or status measures; its directory is never asked)."""
    from certagent import api, config

    folder = work / "thousand"
    (folder / "www").mkdir(parents=True)
    lines = [
        f"state_dir: {folder / 'state'}",
        "ca: {directory: https://127.0.0.1:9/dir, max_new_orders: 1000000}",
        "certificates:",
    ]
    for i in range(1000):
        lines += [
            f"  c{i:04d}:",
            f"    names: [c{i:04d}.k.bench.test]",
            f"    challenge: {{type: http-01, webroot: {folder / 'www'}}}",
        ]
    path = folder / "certagent.yaml"
    path.write_text("\n".join(lines) + "\n")
    api.renew(config.load(path), issuer=LocalIssuer())
    return path


def deploy_config(b: Bench, nginx: Nginx, count: int, group: bool) -> Path:
    roots = b.work / "issuing-roots.pem"
    roots.write_bytes(b.pebble.issuing_roots())
    certs = {}
    for i in range(count):
        name = f"d{i:02d}.deploy.bench.test"
        certs[f"d{i:02d}"] = {
            "names": [name],
            "challenge": {
                "type": "http-01",
                "standalone": {"address": "127.0.0.1", "port": b.pebble.http_port},
            },
            "deploy": {
                "templates": [
                    {"template": "nginx/site.conf.j2", "dest": str(nginx.sites / f"d{i:02d}.conf")}
                ],
                "vars": {"listen": f"127.0.0.1:{nginx.port}"},
                "test": ["nginx", "-t", "-q", "-p", str(nginx.prefix), "-c", str(nginx.conf)],
                "hook": nginx.reload_argv,
                "endpoints": [{"address": f"127.0.0.1:{nginx.port}", "sni": name}],
                "trust_roots": [str(roots)],
                "group": group,
            },
        }
    cfg = {
        "state_dir": str(nginx.prefix / "state"),
        "ca": {
            "directory": b.pebble.directory_url,
            "agree_tos": True,
            "trust_roots": [str(b.pebble.tls_root)],
            "max_new_orders": 1000000,  # a local pebble: no public CA's per-account limit
        },
        "certificates": certs,
    }
    path = nginx.prefix / "certagent.yaml"
    path.write_text(json.dumps(cfg))
    return path


def print_table(b: Bench) -> None:
    print("\n| work | client | seconds | x certagent | peak RSS MiB |\n|---|---|---|---|---|")
    ours = {w: s for w, who, s, _ in b.rows if who == "certagent"}
    for work, who, seconds, rss in b.rows:
        ratio = f"{seconds / ours[work]:.1f}" if ours.get(work) else ""
        print(f"| {work} | {who} | {seconds:.2f} | {ratio} | {rss:.0f} |")


def latency(work: Path) -> None:
    """pebble sleeping 0 or 1 s (at random) before each validation: what concurrency buys."""
    print("\n50 new certificates, pebble validating with up to 1 s of latency:")
    pebble = Pebble(work / "slow", env={"PEBBLE_VA_NOSLEEP": "", "PEBBLE_VA_SLEEPTIME": "2"})
    pebble.start()
    try:
        b = Bench(work, pebble)
        for c in (1, 4, 8):
            cfg = b.certagent_config(
                f"slow{c}", 50, f"  max_orders: {c}\npolicy: {{concurrency: {c}}}"
            )
            b.add(f"50 orders, concurrency {c}", "certagent", b.certagent(cfg, "renew"))
    finally:
        pebble.stop()


if __name__ == "__main__":
    sys.exit(main())
