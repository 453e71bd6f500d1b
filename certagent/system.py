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
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol


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

    def _status(self) -> str:
        if self.timed_out:
            return f"timed out after {self.seconds:.1f} s and was killed"
        if self.returncode is None:
            return "could not start"
        return f"exited {self.returncode}"

    def describe(self) -> str:
        tail = self.output.strip()
        return f"`{' '.join(self.argv)}` {self._status()}" + (f": {tail}" if tail else "")

    def explain(self) -> str:
        """The program's own words first (a server's error names its file and line),
        then which command said them and how it ended."""
        tail = " ".join(self.output.split())
        how = f"`{' '.join(self.argv)}` {self._status()}"
        return f"{tail} ({how})" if tail else how


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError), pipe:  # BrokenPipeError: the child stopped reading
        pipe.write(data)


class _Tail:
    """Keeps only the last `size` bytes of a stream, however much it carries: a hook
    that prints gigabytes costs a fixed amount of memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray()

    def drain(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        with stream:
            while chunk := stream.read1(65536):  # type: ignore[attr-defined]
                self.buf += chunk
                if len(self.buf) > 2 * self.size:
                    del self.buf[: len(self.buf) - self.size]

    def text(self) -> str:
        return bytes(self.buf[-self.size :]).decode("utf-8", "replace")


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
    import subprocess  # here only: `status` and `--help` start no process

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
    tail = _Tail(limit * 4)  # bytes: a character is at most 4 of them in UTF-8
    reader = threading.Thread(target=tail.drain, args=(proc.stdout,), daemon=True)
    reader.start()
    if proc.stdin is not None:  # fed from a thread: a child that never reads cannot block us
        threading.Thread(target=_feed, args=(proc.stdin, stdin or b""), daemon=True).start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
        # The output ends when every holder of the pipe is gone (a child's own child
        # too), within the same deadline.
        reader.join(max(0.0, timeout - (time.monotonic() - start)))
        timed_out = reader.is_alive()
    except subprocess.TimeoutExpired:
        timed_out = True
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
    text = tail.text()[-limit:]
    code = None if timed_out else proc.returncode
    return RunResult(tuple(argv), code, text, time.monotonic() - start, timed_out)
