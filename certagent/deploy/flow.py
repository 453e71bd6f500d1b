"""The deploy flow, one for a certificate alone and for a group sharing a web server
(one certificate is a group of one):

    gate (gate.py: each member's checks, the shared ones, one config test with every
    candidate in view) -> the peer's step (a keepalived MASTER: the peer takes the
    releases first and is seen ready again) -> swap every member (links.py)
    -> one reload (reload.py) -> verify every endpoint at once -> commit all
        | any failure: swap all back, one reload, verify the old ones; deploy again
          those that did not fail

A release carries its rendered configs (configs.py), which point at the release's
own key and chain; each configured destination is a symlink through the
certificate's `current` link. So one `os.replace` of `current` swaps the certificate
and every config at once, the config test sees exactly what will go live, and
rollback is the same flip back. Outcomes stay per member (`Outcome`, `CertState`, its
own `Steps`).

Side effects: filesystem (links, state), subprocesses (config test, hook) and network
(the TLS probe), all through injected ports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..model import CertSpec, DeploySpec, Endpoint, Outcome
from ..steps import Steps
from ..store import Store
from ..system import Clock
from . import links
from .gate import Gate
from .ports import DeployFailed, Member, NoPeer, Peer, Prober, Runner
from .reload import reload

log = logging.getLogger(__name__)


class Deployer:
    def __init__(
        self,
        store: Store,
        runner: Runner,
        prober: Callable[[DeploySpec], Prober],
        clock: Clock,
        stage: str = "production",
        peer: Peer | None = None,
    ) -> None:
        self.store = store
        self.run = runner
        self.prober = prober
        self.clock = clock
        self.stage = stage  # "staging" when rehearsing: hooks see it as CERTAGENT_STAGE
        self.peer: Peer = peer or NoPeer()
        self.gate = Gate(store, runner, clock, stage)

    def group_tag(self, spec: CertSpec) -> object:
        """What certificates must share besides the test and hook to be deployed together."""
        return self.peer.tag(spec)

    def deploy(self, members: Sequence[Member], again: bool = True) -> None:
        """Deploy the members; each ends with `outcome` and `state` set, or `error`
        (refused before the swap: nothing live changed for it)."""
        ready = self.gate.check(members, self.peer)
        if not ready:
            return
        refusals = self.peer.before_swap(ready)
        for m, refusal in zip(ready, refusals, strict=True):
            m.error = refusal  # e.g. the failover peer did not take it: nothing here changed
        ready = [m for m in ready if m.error is None]
        if not ready:
            return
        for m in ready:
            prev_id = m.previous.release_id if m.previous else None
            m.state = replace(m.state, pending=(m.release.release_id, prev_id))
            self.store.write_state(m.spec.name, m.state)  # a kill from here on is resumed
        for m in ready:
            with m.steps.step("swap", f"current -> {m.release.release_id}") as notes:
                notes += links.swap(self.store, m.spec, m.release.release_id)
                notes += self.peer.swapped(m.spec)
        self.finish(ready, again)

    def finish(self, members: Sequence[Member], again: bool = False) -> None:
        """After the swap (also of a run that died there): one reload, verify; commit,
        or roll every member back and, with `again`, deploy once more those that did
        not fail."""
        try:
            self._once(members, lambda steps: reload(self.run, self.stage, members, "deploy",
                                                     steps))  # fmt: skip
        except DeployFailed:
            self.rollback(members)
            return
        failed = self._verify(members, "verify")
        if not failed:
            for m in members:
                prev_id = m.previous.release_id if m.previous else None
                m.outcome = Outcome.RENEWED
                m.state = replace(
                    m.state, pending=None, failed_release=None, previous_release=prev_id
                )
            return
        self.rollback(members)
        rest = [m for m in members if m not in failed and m.outcome is Outcome.ROLLED_BACK]
        if again and rest:
            why = ", ".join(m.spec.name for m in failed)
            log.warning("deploying %d certificate(s) again without %s", len(rest), why)
            for m in rest:
                m.steps.add("regroup", True, 0.0, f"deployed again without {why}, which failed")
                m.outcome = None
            self.deploy(rest, again=False)

    def rollback(self, members: Sequence[Member]) -> None:
        """Every member back to its previous release (or its links removed), one reload,
        and the old certificates verified. Judged by what is served: BROKEN only for a
        member whose old certificate is not (a failing hook is recorded, but nginx, for
        one, keeps serving its old configuration when a reload is refused), or that has
        no previous release and a hook that failed."""
        for m in members:
            m.state = replace(m.state, pending=None, failed_release=m.release.release_id)
            try:
                with m.steps.step("rollback") as notes:
                    if m.previous is not None:
                        notes += links.swap(self.store, m.spec, m.previous.release_id)
                    else:
                        notes += links.unswap(self.store, m.spec)
                m.outcome = Outcome.ROLLED_BACK
            except OSError as exc:
                m.steps.add("rollback", False, 0.0, f"cannot restore the previous release: {exc}")
                m.outcome = Outcome.BROKEN
        try:
            self._once(members, lambda steps: reload(self.run, self.stage, members, "rollback",
                                                     steps))  # fmt: skip
        except DeployFailed:
            for m in members:
                if m.previous is None:
                    m.outcome = Outcome.BROKEN  # nothing to verify: the hook's word is all
        old = [m for m in members if m.previous is not None and m.outcome is Outcome.ROLLED_BACK]
        for m in self._verify(old, "verify-old"):
            m.outcome = Outcome.BROKEN

    def _verify(self, members: Sequence[Member], name: str) -> list[Member]:
        """Every member's endpoints at once (`verify`: its new release; `verify-old`: its
        previous one), in one wait per prober (members with the same trust roots share
        one); the members whose endpoints failed."""
        waits: dict[int, tuple[Prober, list[tuple[Member, tuple[Endpoint, ...], str]]]] = {}
        for m in members:
            release = m.release if name == "verify" else m.previous
            assert release is not None  # noqa: S101 - verify-old only with a previous release
            endpoints = tuple(self.peer.endpoints(m.spec, name))
            if endpoints:
                prober = self.prober(m.deploy)
                waits.setdefault(id(prober), (prober, []))[1].append(
                    (m, endpoints, release.fingerprint_sha256)
                )
        failed = []
        for prober, jobs in waits.values():
            start = self.clock.monotonic()
            results = prober.wait_all(
                [(endpoints, fp, m.deploy.verify_timeout) for m, endpoints, fp in jobs]
            )
            took = self.clock.monotonic() - start
            for (m, endpoints, fp), failures in zip(jobs, results, strict=True):
                if failures:
                    m.steps.add(name, False, took, "; ".join(failures))
                    failed.append(m)
                else:
                    where = ", ".join(f"{e.host}:{e.port}" for e in endpoints)
                    m.steps.add(name, True, took, f"{where} serve {fp[:16]}…")
        return failed

    @staticmethod
    def _once(members: Sequence[Member], run: Callable[[Steps], None]) -> None:
        """Run a step once (recorded in the first member's steps) and copy its result to
        every other member, so each report shows the group's reload."""
        first = members[0]
        before = len(first.steps.results)
        try:
            run(first.steps)
        finally:
            for result in first.steps.results[before:]:
                for m in members[1:]:
                    m.steps.results.append(result)
