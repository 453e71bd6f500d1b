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

    def __str__(self) -> str:
        where = self.path or "(top level)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
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

    `problem_type` and `detail` come from the ACME problem document
    (RFC 8555 section 6.7) when the CA sent one.
    """

    def __init__(
        self,
        ca: str,
        message: str,
        problem_type: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.ca = ca
        self.problem_type = problem_type
        self.detail = detail
        self.retry_at: dt.datetime | None = None  # the CA's Retry-After, when it gave one
        self.repeated = False  # the same outage, already reported in this run
        self.status: int | None = None  # the HTTP status that carried it, if any
        super().__init__(f"CA {ca}: {message}")


class CAUnreachable(OrderFailed):
    """No answer from the CA at all (connection refused, DNS, timeout), as opposed
    to an answer we reject (a TLS verification failure is never "unreachable")."""

    code = "ca-unreachable"


class CABusy(OrderFailed):
    """The CA answered 429 or 503 (rate limit, overload, maintenance) beyond the wait
    we accept in one run."""

    code = "ca-busy"

    def __init__(
        self,
        ca: str,
        message: str,
        problem_type: str | None = None,
        detail: str | None = None,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(ca, message, problem_type, detail)
        self.status = status


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
