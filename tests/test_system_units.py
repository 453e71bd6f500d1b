"""Unit: the one runner of external commands keeps a bounded tail of any output, feeds
stdin without blocking, and kills at the deadline (issue #12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from certagent import system

ROOT = Path(__file__).resolve().parent.parent


def test_a_hook_that_prints_300_mb_costs_a_bounded_amount_of_memory() -> None:
    code = (
        "from pathlib import Path\n"
        "from certagent import system\n"
        "r = system.run(['sh', '-c', 'head -c 300000000 /dev/zero | tr \"\\\\0\" x; echo END'],"
        " 120, {})\n"
        "assert r.ok and r.output.endswith('END\\n') and len(r.output) == system.OUTPUT_TAIL\n"
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec
        "status = Path('/proc/self/status').read_text().splitlines()\n"
        "print(next(line.split()[1] for line in status if line.startswith('VmHWM')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=180, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 80 * 1024, f"{int(proc.stdout) // 1024} MiB"


def test_stdin_to_a_child_that_never_reads_does_not_block() -> None:
    result = system.run(["sleep", "0"], 10, {}, stdin=b"x" * (4 << 20))
    assert result.ok and not result.timed_out


def test_the_deadline_kills_what_the_child_started() -> None:
    result = system.run(["sh", "-c", "sleep 30 & sleep 30"], 0.3, {})
    assert result.timed_out and result.returncode is None and result.seconds < 10
