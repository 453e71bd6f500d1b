"""Run certagent's CLI in-process over many configuration files, one at a time, each
command under a 5 s alarm, the whole process under an address-space limit.

Used by tests/test_fuzz_config.py as `python -m tests.fuzz_worker DIR`: prints one JSON
object per (file, command) on stdout. `check` and `health` run only on configurations
that fail to load or whose every endpoint is an IP literal: the fuzz never looks a
name up through the system resolver.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from certagent import api, cli
from certagent.errors import CertagentError

SECONDS = 5
ADDRESS_SPACE = 2 << 30  # 2 GiB: an alias bomb that grows without end hits this


class Hung(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hung()


def _ip_only(path: Path) -> bool:
    try:
        config = api.load_config(str(path))
    except CertagentError:
        return True  # does not load: check and health answer without any network
    hosts = [t.endpoint.host for t in api.check_targets(config)]
    if config.failover is not None:
        hosts.append(config.failover.address)
    try:
        for host in hosts:
            ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def run_one(path: Path, args: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    signal.alarm(SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code: int | str = cli.main(["-c", str(path), *args])
    except Hung:
        code = "hung"
    except MemoryError:
        code = "memory"
    except BaseException as exc:  # what escaped cli.main is a finding, not a worker crash
        code = f"escaped {type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
    return {
        "file": path.name,
        "args": args,
        "code": code,
        "seconds": round(time.monotonic() - start, 3),
        "out": out.getvalue()[-400:],
        "err": err.getvalue()[-400:],
    }


def main(folder: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    signal.signal(signal.SIGALRM, _alarm)
    for path in sorted(Path(folder).glob("*.yaml")):
        commands = [["config", "validate"], ["plan"]]
        signal.alarm(SECONDS)
        try:
            if _ip_only(path):
                commands += [["check"], ["health", "--timeout", "0.5"]]
        except Hung:
            print(json.dumps({"file": path.name, "args": ["load"], "code": "hung"}), flush=True)
        finally:
            signal.alarm(0)
        for args in commands:
            print(json.dumps(run_one(path, args)), flush=True)
    # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's across exec)
    status = Path("/proc/self/status").read_text().splitlines()
    rss = int(next(line.split()[1] for line in status if line.startswith("VmHWM")))
    print(json.dumps({"max_rss_kib": rss}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
