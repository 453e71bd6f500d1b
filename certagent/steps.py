"""Steps of a run, timed and recorded as data (`StepResult`), also when one raises.

Its own module so that `plan` and `status` need not import the deployer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import CertagentError
from .model import StepResult
from .system import Clock


class Steps:
    """Times each step and records its result, also when it raises."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.results: list[StepResult] = []

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[list[str]]:
        notes = [detail] if detail else []
        start = self.clock.monotonic()
        try:
            yield notes
        except CertagentError as exc:
            self.add(name, False, self.clock.monotonic() - start, str(exc))
            raise
        self.add(name, True, self.clock.monotonic() - start, "; ".join(notes))

    def add(
        self, name: str, ok: bool, seconds: float, detail: str, override: str | None = None
    ) -> None:
        self.results.append(StepResult(name, ok, seconds, detail, override))
