"""What the deploy flow is given (a command runner, a TLS prober, a peer's step) and
what it carries each certificate through (a `Member`).

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import CertagentError
from ..model import CertSpec, CertState, DeploySpec, Endpoint, Outcome, Release
from ..steps import Steps
from ..system import RunResult


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], timeout: float, env: Mapping[str, str]
    ) -> RunResult: ...


class Prober(Protocol):
    def wait_for(
        self, endpoints: Sequence[Endpoint], fingerprint: str, timeout: float
    ) -> list[str]: ...

    def wait_all(
        self, jobs: Sequence[tuple[Sequence[Endpoint], str, float]]
    ) -> list[list[str]]: ...


class DeployFailed(CertagentError):
    """A deploy step after the swap failed; carries every reason."""


@dataclass
class Member:
    """One certificate going through the flow (a group of one, or one of many): what it
    deploys, what it rolls back to, and, at the end, its `outcome` and `state`, or
    `error` (refused before the swap: nothing live changed)."""

    spec: CertSpec
    release: Release
    previous: Release | None
    state: CertState
    steps: Steps
    outcome: Outcome | None = None
    error: CertagentError | None = None

    @property
    def deploy(self) -> DeploySpec:
        return need(self.spec)


class Peer(Protocol):
    """Another node's part in a deploy (a keepalived MASTER's BACKUP), injected into the
    flow at its four moments: the gate, before the swap, after it, and verify."""

    def tag(self, spec: CertSpec) -> object:
        """What certificates must share, besides the test and the hook, to be deployed
        together (a keepalived pair: the VRRP instance they follow)."""
        ...

    def overridden(self, specs: Sequence[CertSpec]) -> str | None:
        """The safety the operator skipped for these certificates, for the audit."""
        ...

    def gate(self, specs: Sequence[CertSpec]) -> tuple[list[str], list[str]]:
        """Checks run once for the group (the peer's readiness): problems, what was seen."""
        ...

    def before_swap(self, members: Sequence[Member]) -> list[CertagentError | None]:
        """What must succeed elsewhere first (the peer takes the releases): for each
        member None, or why it must not swap."""
        ...

    def swapped(self, spec: CertSpec) -> list[str]:
        """Notes for the swap step (how long after the peer was last seen ready)."""
        ...

    def endpoints(self, spec: CertSpec, step: str) -> tuple[Endpoint, ...]:
        """Where `step` (verify, verify-old) checks what is served."""
        ...


class NoPeer:
    """A node alone: no shared checks, nothing before the swap, the configured endpoints."""

    def tag(self, spec: CertSpec) -> object:
        return None

    def overridden(self, specs: Sequence[CertSpec]) -> str | None:
        return None

    def gate(self, specs: Sequence[CertSpec]) -> tuple[list[str], list[str]]:
        return [], []

    def before_swap(self, members: Sequence[Member]) -> list[CertagentError | None]:
        return [None] * len(members)

    def swapped(self, spec: CertSpec) -> list[str]:
        return []

    def endpoints(self, spec: CertSpec, step: str) -> tuple[Endpoint, ...]:
        return need(spec).endpoints


def need(spec: CertSpec) -> DeploySpec:
    if spec.deploy is None:
        raise DeployFailed(f"certificate {spec.name} has no deploy section")
    return spec.deploy
