"""certagent at 1,000 and 10,000 certificates on one host (issue #28), beside the floor
and certbot. For each size: a configuration in parts (`certificates_dir`, 250
certificates a file, the challenge in `defaults`), a store filled by certagent's own
pipeline from a local signing CA (`tests.fakes.LocalIssuer`: the CA is not what these
runs measure), then, with the installed wheel (`bench/side_by_side.py`'s venv):

- a no-op `renew` (best of ROUNDS, after one that asks the absent CA for renewal
  information; `bench/first_noop.py` measures the first no-op after issuance from pebble),
  and one that reads every certificate (the no-op cache not believed: after another run
  under the lock, or at the daily re-hash);
- one run that issues every certificate (the checkout's pipeline and a local CA in one
  process: the store the rest is measured on);
- `status`, `plan`, `metrics`, `--json metrics`, `history` and `--json history` (best
  of ROUNDS; the history then holds the no-op runs' records, each of every certificate),
  and `check` of the same certificates with `deploy.endpoints: none` (no network);
- the floor (`bench/noop_floor.py`: read every live certificate, compare its
  notAfter with now; nothing else);
- certbot's `renew` over a certbot store of the same size (lineages written directly,
  certificates from a local root: certbot has nothing to renew either).

Wall seconds and peak RSS of each, the ratios to the floor and to certbot, and the
growth from the smaller size to the larger (linear is x10).

Usage: bench/scale.py [SIZE ...]   (default: 1000 10000; building 10,000 takes ~4 min)
Needs: certbot (Debian package); `make wheelhouse` for the installed certagent.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.side_by_side import PLAIN_ENV, install, timed  # noqa: E402

ROUNDS = 3
PER_FILE = 250
Result = tuple[float, float]


def build(folder: Path, count: int) -> Path:
    """A configuration of `count` certificates in parts, and a store holding them."""
    from certagent import api, config
    from tests.fakes import LocalIssuer

    (folder / "www").mkdir(parents=True)
    parts = folder / "certificates.d"
    parts.mkdir()
    main = folder / "certagent.yaml"
    main.write_text(
        f"state_dir: {folder / 'state'}\n"
        "ca: {directory: https://127.0.0.1:9/dir, max_new_orders: 1000000}\n"
        "certificates_dir: certificates.d\n"
        f"defaults: {{challenge: {{type: http-01, webroot: {folder / 'www'}}}}}\n"
    )
    for p in range((count + PER_FILE - 1) // PER_FILE):
        names = range(p * PER_FILE, min(count, (p + 1) * PER_FILE))
        (parts / f"part{p:03d}.yaml").write_text(
            "".join(f"c{i:05d}: {{names: [c{i:05d}.scale.bench.test]}}\n" for i in names)
        )
    api.renew(config.load(main), issuer=LocalIssuer())
    return main


def certbot_store(folder: Path, count: int) -> Path:
    """A certbot configuration directory with `count` lineages, none due."""
    from testbed import pki

    root = pki.make_ca("certbot bench root")
    base = folder / "certbot"
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        name = f"c{i:05d}.cb.scale.bench.test"
        cert, key = pki.issue(root, [name], now, now + dt.timedelta(days=90))
        archive, live = base / "archive" / name, base / "live" / name
        archive.mkdir(parents=True)
        live.mkdir(parents=True)
        files = {"cert": cert, "privkey": key, "chain": root.pem(), "fullchain": cert + root.pem()}
        for kind, data in files.items():
            (archive / f"{kind}1.pem").write_bytes(data)
            os.symlink(f"../../archive/{name}/{kind}1.pem", live / f"{kind}.pem")
        (base / "renewal").mkdir(exist_ok=True)
        (base / "renewal" / f"{name}.conf").write_text(
            f"version = 2.1.0\narchive_dir = {archive}\ncert = {live}/cert.pem\n"
            f"privkey = {live}/privkey.pem\nchain = {live}/chain.pem\n"
            f"fullchain = {live}/fullchain.pem\n\n[renewalparams]\n"
            "account = 0123456789abcdef0123456789abcdef\nauthenticator = standalone\n"
            "server = https://127.0.0.1:9/dir\n"
        )
    return base


def best(runs: list[Result]) -> Result:
    return min(r[0] for r in runs), max(r[1] for r in runs)


def full_noop(run: list[str], folder: Path) -> Result:
    """A no-op that reads every certificate: the no-op cache is not believed after
    another run took the lock (which writes its PID over the cache's token, as this
    does), nor once a day when the digests are hashed again."""
    (folder / "state" / "lock").write_text("1\n")
    return timed([*run, "renew"], PLAIN_ENV)


def measure(certagent: list[str], folder: Path, count: int) -> dict[str, Result]:
    print(f"{count} certificates: building the store", flush=True)
    out: dict[str, Result] = {}
    # one run that issues every certificate (the checkout's certagent, in a process of
    # its own, the local CA in it): what a large host's first run costs beside the CA
    code = ("from pathlib import Path; from bench.scale import build; "
            f"build(Path({str(folder)!r}), {count})")  # fmt: skip
    out["issue all, one run"] = timed([sys.executable, "-c", code],
                                      {**PLAIN_ENV, "PYTHONPATH": str(ROOT)})  # fmt: skip
    cfg = folder / "certagent.yaml"
    run = [*certagent, "-c", str(cfg), "-q"]
    timed([*run, "renew"], PLAIN_ENV)  # warm-up: asks the (absent) CA for renewal info once
    out["no-op renew"] = best([timed([*run, "renew"], PLAIN_ENV) for _ in range(ROUNDS)])
    out["no-op, read whole"] = best([full_noop(run, folder) for _ in range(ROUNDS)])
    for command in ("status", "plan", "metrics", "--json metrics", "history", "--json history"):
        argv = [*run, *command.split()]
        out[command] = best([timed(argv, PLAIN_ENV) for _ in range(ROUNDS)])
    # `check` probes each name on 443 unless told otherwise: the same certificates with
    # `deploy.endpoints: none` measure what it does without the network (each one's
    # store read and judged; UNKNOWN, exit 3, as none is watched)
    unwatched = folder / "check.yaml"
    unwatched.write_text(
        cfg.read_text().replace(
            "defaults: {", "defaults: {deploy: {endpoints: none, endpoints_reason: a bench}, ", 1
        )
    )
    argv = [*certagent, "-c", str(unwatched), "-q", "check"]
    out["check, no network"] = best([timed(argv, PLAIN_ENV, (3,)) for _ in range(ROUNDS)])
    floor = [sys.executable, str(ROOT / "bench" / "noop_floor.py"), str(folder / "state")]
    out["floor"] = best([timed(floor) for _ in range(ROUNDS)])
    if shutil.which("certbot"):
        print(f"{count} certificates: certbot's store", flush=True)
        base = certbot_store(folder, count)
        argv = ["certbot", "--config-dir", str(base), "--work-dir", str(folder / "cbw"),
                "--logs-dir", str(folder / "cbl"), "--non-interactive", "--quiet",
                "renew", "--no-random-sleep-on-renew"]  # fmt: skip
        out["certbot renew"] = best([timed(argv) for _ in range(1 if count > 2000 else ROUNDS)])
    return out


def main() -> int:
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 10000]
    certagent = install()
    results: dict[int, dict[str, Result]] = {}
    with tempfile.TemporaryDirectory(prefix="certagent-scale-") as tmp:
        for n in sizes:
            results[n] = measure(certagent, Path(tmp) / str(n), n)
            shutil.rmtree(Path(tmp) / str(n))
    print("\n| certificates | work | seconds | peak RSS MiB | x floor | x certbot |")
    print("|---|---|---|---|---|---|")
    for n, out in results.items():
        floor, certbot = out["floor"][0], out.get("certbot renew", (0.0, 0.0))[0]
        for work, (seconds, rss) in out.items():
            own = work in ("floor", "issue all, one run")  # no ratio to the floor
            x_floor = "" if own else f"{seconds / floor:.1f}"
            against = certbot and ("no-op" in work or "renew" in work)
            x_certbot = f"{seconds / certbot:.2f}" if against else ""
            print(f"| {n} | {work} | {seconds:.2f} | {rss:.0f} | {x_floor} | {x_certbot} |")
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print(f"\ngrowth from {small} to {large} (x{large / small:.0f} certificates):")
        for work in results[small]:
            a, b = results[small][work], results[large].get(work)
            if b:
                print(f"  {work:14} time x{b[0] / a[0]:.1f}, peak RSS {a[1]:.0f} -> {b[1]:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
