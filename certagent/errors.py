"""The error tree and the exit-status contract for cron and Salt.

Side effects: none. Every shell (CLI, Salt, Python callers) catches
`CertagentError` once and maps it to `ExitStatus` through `exit_status`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum


class ExitStatus(IntEnum):
    """Exit codes documented in the README; a stable contract."""

    OK = 0  # renewed, or nothing was due
    FAILED = 1  # failed before the swap; live untouched
    ROLLED_BACK = 2  # rolled back; the old certificate is serving
    BROKEN = 3  # rollback failed
    USAGE = 64  # EX_USAGE
    LOCKED = 75  # EX_TEMPFAIL: another run holds the lock
    CONFIG = 78  # EX_CONFIG
    INTERRUPTED = 130  # 128 + SIGINT: stopped by the operator
    PIPE = 141  # 128 + SIGPIPE: what read certagent's output stopped reading (`| head`)


MEANING = {
    ExitStatus.OK: "renewed, or nothing was due",
    ExitStatus.FAILED: "failed before the swap; live untouched",
    ExitStatus.ROLLED_BACK: "rolled back; the old certificate is serving",
    ExitStatus.BROKEN: "BROKEN: the rollback failed too; check the web server now",
    ExitStatus.USAGE: "usage error",
    ExitStatus.LOCKED: "another run holds the lock",
    ExitStatus.CONFIG: "configuration error",
    ExitStatus.INTERRUPTED: "interrupted",
    ExitStatus.PIPE: "the reader of the output went away (the run's work is done)",
}


class PluginStatus(IntEnum):
    """`check`'s exit codes: the monitoring-plugin convention."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class CertagentError(Exception):
    """Base of every error certagent raises on purpose."""

    exit_status: ExitStatus = ExitStatus.FAILED
    code: str | None = None  # machine-readable kind, carried into CertResult.error_code


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration, located by key path and line."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None  # a part of the configuration; None: the main file

    def __str__(self) -> str:
        where = self.path or "(top level)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        if self.file is not None:
            where = f"{self.file}: {where}"
        return f"{where}: {self.message}"


class ConfigError(CertagentError):
    """The configuration is unreadable or invalid; carries every problem at once."""

    exit_status = ExitStatus.CONFIG

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} configuration problem(s)"]
        lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


class UsageError(CertagentError):
    """The command line asks for something that cannot be done."""

    exit_status = ExitStatus.USAGE


class LockHeld(CertagentError):
    """Another certagent run holds the state directory's lock."""

    exit_status = ExitStatus.LOCKED


class StoreError(CertagentError):
    """The state directory cannot be read or written as needed."""

    code = "store"


class OrderFailed(CertagentError):
    """The CA refused or could not complete an order.

    `problem_type` and `detail` come from the ACME problem document (RFC 8555 section
    6.7) when the CA sent one; `status` is the HTTP status that carried it; `retry_at`
    the CA's Retry-After; `repeated`: the same outage, already reported in this run.
    `notes` are said after the message (e.g. this machine's clock against the CA's).
    """

    def __init__(
        self,
        ca: str,
        message: str,
        problem_type: str | None = None,
        detail: str | None = None,
        *,
        status: int | None = None,
        retry_at: dt.datetime | None = None,
        repeated: bool = False,
    ) -> None:
        self.ca = ca
        self.problem_type = problem_type
        self.detail = detail
        self.status = status
        self.retry_at = retry_at
        self.repeated = repeated
        self.notes: list[str] = []
        super().__init__(f"CA {ca}: {message}")

    def __str__(self) -> str:
        return super().__str__() + "".join(f" ({note})" for note in self.notes)


class CAUnreachable(OrderFailed):
    """No answer from the CA at all (connection refused, DNS, timeout), as opposed
    to an answer we reject (a TLS verification failure is never "unreachable")."""

    code = "ca-unreachable"


class CABusy(OrderFailed):
    """The CA answered 429 or 503 (rate limit, overload, maintenance) beyond the wait
    we accept in one run."""

    code = "ca-busy"


class CAUnavailable(OrderFailed):
    """Nothing was sent: the CA's Retry-After for every client holds, or its circuit
    breaker is open (repeated 5xx answers or no answer). The certificate is skipped,
    not failed: no back-off of its own, a later run tries again."""

    code = "ca-unavailable"


class RehearsalFailed(CertagentError):
    """The rehearsal on the staging CA failed: production is neither ordered nor touched."""

    code = "rehearsal-failed"


class GateRefused(CertagentError):
    """Preflight found reasons not to swap (config test, permissions, disk, failover peer)."""

    code = "gate-refused"


class ChallengeFailed(CertagentError):
    """A challenge solver could not publish or remove a validation."""
