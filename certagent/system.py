"""The world outside the process: clocks, sleeping and (only here) subprocesses.

Side effects: reads clocks, sleeps, starts processes (`run`: argv, no shell, a
mandatory timeout, an explicit environment, the output tail kept for the report).
Everything else receives these as arguments, so tests pass their own clock and
runner instead of patching this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


# Children get this environment plus what the caller adds; never os.environ.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
OUTPUT_TAIL = 4000


@dataclass(frozen=True)
class RunResult:
    argv: tuple[str, ...]
    returncode: int | None  # None: could not start, or killed at the timeout
    output: str  # the tail of stdout and stderr, interleaved
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        if self.timed_out:
            status = f"timed out after {self.seconds:.1f} s and was killed"
        elif self.returncode is None:
            status = "could not start"
        else:
            status = f"exited {self.returncode}"
        tail = self.output.strip()
        return f"`{' '.join(self.argv)}` {status}" + (f": {tail}" if tail else "")


def run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str],
    stdin: bytes | None = None,
    limit: int = OUTPUT_TAIL,
) -> RunResult:
    """Run argv without a shell, with a timeout and exactly the given environment.

    The child gets its own process group so that a timeout kills what it started too.
    `stdin` is fed to the child (else it reads nothing); `limit` is how much of the
    output's tail is kept (a report wants little, a parser all of it).
    """
    start = time.monotonic()
    child_env = {**BASE_ENV, **env}
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
    except OSError as exc:
        return RunResult(
            tuple(argv), None, f"cannot run {argv[0]}: {exc.strerror}", time.monotonic() - start
        )
    timed_out = False
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    text = out.decode("utf-8", "replace")[-limit:]
    code = None if timed_out else proc.returncode
    return RunResult(tuple(argv), code, text, time.monotonic() - start, timed_out)
