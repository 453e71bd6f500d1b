"""Plain values shared by every module: what a run finds and does (releases, state,
decisions, outcomes, step results, reports) and, re-exported from `specs`, what the
configuration says.

Side effects: none. Everything here is a frozen dataclass or an enum so that the
pure parts (planning, rendering the report) can be tested with literals.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .specs import (
    CASpec,
    CertSpec,
    ChallengeSpec,
    Command,
    Config,
    DeploySpec,
    Dns01Hook,
    Dns01Persist,
    Dns01Rfc2136,
    Eab,
    Email,
    Endpoint,
    Heartbeat,
    Http01Standalone,
    Http01Webroot,
    Keepalived,
    KeyType,
    LinkSpec,
    Monitor,
    MonitorEndpoint,
    Notify,
    OnBackup,
    Peer,
    Policy,
    Propagation,
    Staging,
    StagingTarget,
    TemplateSpec,
    TlsAlpn01Standalone,
    Unreachable,
    Webhook,
)

__all__ = [
    "MONITOR_LEVEL",
    "CASpec",
    "CertResult",
    "CertSpec",
    "CertState",
    "ChallengeSpec",
    "Command",
    "Config",
    "Decision",
    "DeploySpec",
    "Dns01Hook",
    "Dns01Persist",
    "Dns01Rfc2136",
    "Eab",
    "Email",
    "Endpoint",
    "Heartbeat",
    "Http01Standalone",
    "Http01Webroot",
    "Keepalived",
    "KeyType",
    "LinkSpec",
    "Monitor",
    "MonitorEndpoint",
    "Notify",
    "OnBackup",
    "OrderOptions",
    "Outcome",
    "Peer",
    "Policy",
    "Propagation",
    "Release",
    "RenewalWindow",
    "Report",
    "Staging",
    "StagingTarget",
    "StepResult",
    "TemplateSpec",
    "TlsAlpn01Standalone",
    "Undeployed",
    "Unreachable",
    "Webhook",
    "iso",
]  # fmt: skip


@dataclass(frozen=True)
class Release:
    """One immutable issuance on disk, as described by its metadata."""

    cert_name: str
    release_id: str
    path: Path
    names: tuple[str, ...]
    key_type: KeyType
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    issuer: str
    ca: str = ""  # the ACME directory it was ordered from
    # SHA-256 of each file as staged (key, certificates), to notice damage cheaply
    digests: Mapping[str, str] = field(default_factory=dict)
    profile: str | None = None  # the ACME profile it was ordered with
    skipped: str | None = None  # ordered from a fallback CA: why the ones before were skipped

    def fallback_note(self, preferred: str) -> str | None:
        """Said by status and check when a fallback CA issued it, else None."""
        if self.ca in ("", preferred):
            return None
        why = f": {self.skipped}" if self.skipped else ""
        return f"issued by the fallback CA {self.ca}, not the preferred {preferred}{why}"


@dataclass(frozen=True)
class OrderOptions:
    """What shapes an order beyond the CSR."""

    profile: str | None = None  # an ACME profile the CA advertises (meta.profiles)
    replaces: bytes | None = None  # PEM of the certificate this renews (ARI `replaces`)


@dataclass(frozen=True)
class RenewalWindow:
    """A window suggested by the CA through ACME Renewal Information (RFC 9773)."""

    start: dt.datetime
    end: dt.datetime
    explanation_url: str | None = None  # why the CA moved the window (e.g. a revocation)
    next_check: dt.datetime | None = None  # the CA's Retry-After for renewalInfo


@dataclass(frozen=True)
class CertState:
    """What earlier runs left for the planner: outcome and failure streak."""

    last_outcome: str | None = None
    last_attempt: dt.datetime | None = None
    consecutive_failures: int = 0
    window: RenewalWindow | None = None
    # A swap whose verification has not finished: (new release, release it replaced).
    pending: tuple[str, str | None] | None = None
    # A staged release whose deploy failed and was rolled back; retried on the next run.
    failed_release: str | None = None
    # The release that was current before the current one: what a rollback returns to.
    previous_release: str | None = None
    # Counters and last results, for metrics (never used for planning).
    last_success: dt.datetime | None = None
    attempts: int = 0
    failures: int = 0
    refusals: int = 0  # a gate (rehearsal, preflight) refused the swap
    verify_ok: bool | None = None  # the last verify step's result, when there was one
    # The CA's Retry-After (429, 503): nothing for this certificate goes to it before.
    retry_after: dt.datetime | None = None
    # (release, reason) of a revocation through `certagent revoke`: renewed next run.
    revoked: tuple[str, str] | None = None
    # When to ask the CA for renewal information again (its Retry-After, a day when it
    # offers none): a run with nothing due sends nothing to the CA before then.
    ari_next: dt.datetime | None = None
    # Why the last attempt failed (its error, shortened): said beside a certificate that
    # was issued but is not live, so that plan, status and check tell the operator why.
    last_error: str | None = None


@dataclass(frozen=True)
class Undeployed:
    """A certificate the CA issued for this one that is not live: a staged release whose
    deploy failed (`staged`), or an issuance kept before it could be staged. Deploying
    it needs no CA, so no back-off of the CA's applies to it."""

    ref: str  # the release id, or the kept issuance's file name
    staged: bool
    issued: dt.datetime
    names: tuple[str, ...]
    key_type: KeyType
    not_before: dt.datetime
    not_after: dt.datetime
    profile: str | None
    ca: str
    reason: str  # why it is not live (the failure that kept it back)

    def summary(self) -> str:
        return f"issued {self.issued.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC, not deployed: " \
            f"{self.reason}"  # fmt: skip

    def describe(self, name: str) -> str:
        return f"{self.summary()}; `certagent deploy {name}` deploys it"


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str
    renew_at: dt.datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "reason": self.reason,
            "renew_at": iso(self.renew_at),
        }


class Outcome(StrEnum):
    SKIPPED = "skipped"
    RENEWED = "renewed"
    REVOKED = "revoked"  # `certagent revoke` did what it was asked
    FAILED_BEFORE_SWAP = "failed_before_swap"
    ROLLED_BACK = "rolled_back"
    BROKEN = "broken"


# How bad an outcome is for a monitor (a fleet's status, `status`): 0 fine, 2 failed.
# One table, so that no reader looks for outcome names certagent never produces.
MONITOR_LEVEL = {
    Outcome.SKIPPED: 0,
    Outcome.RENEWED: 0,
    Outcome.REVOKED: 0,
    Outcome.FAILED_BEFORE_SWAP: 2,
    Outcome.ROLLED_BACK: 2,
    Outcome.BROKEN: 2,
}


@dataclass(frozen=True)
class StepResult:
    step: str
    ok: bool
    seconds: float
    detail: str = ""
    # A safety skipped on purpose, named for the audit: "staging-unreachable" (went on
    # unrehearsed), "failover-override" (the keepalived gate and peer skipped).
    override: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "step": self.step,
            "ok": self.ok,
            "seconds": round(self.seconds, 4),
            "detail": self.detail,
        }
        if self.override is not None:
            out["override"] = self.override
        return out


@dataclass(frozen=True)
class CertResult:
    name: str
    outcome: Outcome
    decision: Decision
    steps: tuple[StepResult, ...] = ()
    release: str | None = None
    not_after: dt.datetime | None = None
    error: str | None = None
    error_code: str | None = None  # machine-readable kind of error, e.g. "ca-unreachable"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "decision": self.decision.to_json(),
            "release": self.release,
            "not_after": iso(self.not_after),
            "error": self.error,
            "error_code": self.error_code,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class Report:
    command: str
    started: dt.datetime
    finished: dt.datetime
    results: tuple[CertResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "command": self.command,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "certificates": [r.to_json() for r in self.results],
        }


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat(timespec="seconds")
