"""Deploy many certificates to one web server at once: the members of a group share
its config test and its post-run hook (issue #16).

    checks per member and shared ones (a failover pair's readiness) -> one config
    test with every candidate in view -> before the swap (a failover pair: the peer
    takes them all first, then is seen ready again) -> swap all
    -> one reload -> verify every endpoint at once -> commit all
                                  | any failure: swap all back, one reload, verify
                                    the old ones; deploy again those that did not fail

A member that fails its own checks, or whose candidate alone fails the config test,
is refused and holds back no other. Outcomes stay per member (`Outcome`, `CertState`,
its own `Steps`), as `Deployer.deploy` gives them for one certificate.

Side effects: through the deployer (filesystem, subprocesses, network).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .deploy import Deployer, DeployFailed
from .errors import CertagentError, GateRefused
from .model import CertSpec, CertState, Outcome, Release
from .steps import Steps
from .system import RunResult
from .verify import AT_ONCE

log = logging.getLogger(__name__)


@dataclass
class Member:
    spec: CertSpec
    release: Release
    previous: Release | None
    state: CertState
    steps: Steps
    outcome: Outcome | None = None
    error: CertagentError | None = None  # refused before the swap: nothing live changed


def deploy_group(d: Deployer, members: Sequence[Member], again: bool = True) -> None:
    """Deploy the members; each ends with `outcome` and `state` set, or `error` (refused
    before the swap)."""
    ready = _gate(d, members)
    if not ready:
        return
    refusals = d.before_swap_group([(m.spec, m.release, m.steps) for m in ready])
    for m, refusal in zip(ready, refusals, strict=True):
        m.error = refusal  # e.g. the failover peer did not take it: nothing here changed
    ready = [m for m in ready if m.error is None]
    if not ready:
        return
    for m in ready:
        prev_id = m.previous.release_id if m.previous else None
        m.state = replace(m.state, pending=(m.release.release_id, prev_id))
        d.store.write_state(m.spec.name, m.state)  # a kill from here on is resumed next run
    for m in ready:
        with m.steps.step("swap", f"current -> {m.release.release_id}") as notes:
            notes += d.swap(m.spec, m.release.release_id)
    names = [m.spec.name for m in ready]
    try:
        first = ready[0]
        specs = [m.spec for m in ready]
        _once(ready, lambda: d.reload(first.spec, first.release, "deploy", first.steps, names,
                                      specs))  # fmt: skip
    except DeployFailed:
        _rollback(d, ready, names)
        return
    failed = _verify(d, ready, "verify", new=True)
    if not failed:
        for m in ready:
            prev_id = m.previous.release_id if m.previous else None
            m.outcome = Outcome.RENEWED
            m.state = replace(m.state, pending=None, failed_release=None, previous_release=prev_id)
        return
    _rollback(d, ready, names)
    rest = [m for m in ready if m not in failed and m.outcome is Outcome.ROLLED_BACK]
    if again and rest:
        why = ", ".join(m.spec.name for m in failed)
        log.warning("deploying %d certificate(s) again without %s", len(rest), why)
        for m in rest:
            m.steps.add("regroup", True, 0.0, f"deployed again without {why}, which failed")
            m.outcome = None
        deploy_group(d, rest, again=False)


def _gate(d: Deployer, members: Sequence[Member]) -> list[Member]:
    """Each member's own checks and the shared ones, then one config test for those
    that passed (see `tested`); a refused member holds back no other. Each member's
    preflight step shows the group's time."""
    start = d.clock.monotonic()
    skipped = d.overridden([m.spec for m in members])
    if skipped is not None:
        for m in members:
            m.steps.add("override", True, 0.0, skipped, override="failover-override")
    shared, seen = d.group_gate([m.spec for m in members])  # once: e.g. the peer's readiness
    problems = {id(m): d.preflight(m.spec, m.release, test=False) + shared for m in members}
    clean = [m for m in members if not problems[id(m)]]
    test = clean[0].spec.deploy.test if clean and clean[0].spec.deploy else None
    passed = clean
    if test is not None and clean:
        passed, refused = tested(d, clean)
        for key, why in refused.items():
            problems[key].append(why)
    took = d.clock.monotonic() - start
    together = f" (one config test for {len(passed)})" if len(passed) > 1 else ""
    ready = []
    for m in members:
        if problems[id(m)]:
            m.error = GateRefused("; ".join(problems[id(m)]))
            m.steps.add("preflight", False, took, str(m.error))
            continue
        ok = f"config test, permissions and disk space ok{together}"
        m.steps.add("preflight", True, took, "; ".join([*seen, ok]))
        ready.append(m)
    return ready


def tested(d: Deployer, members: Sequence[Member]) -> tuple[list[Member], dict[int, str]]:
    """The members that pass one config test together, and why each other was refused.

    When the group fails, the culprits are looked for in turn: the members whose file
    the failure names at a line (nginx `in FILE:LINE`, haproxy `[FILE:LINE]`, apache
    `line N of FILE`), then those whose candidate fails alone. The rest are tested again
    without them; if they still fail, only together, they are all refused."""

    def test(group: Sequence[Member]) -> RunResult:
        return d.test_candidates([(m.spec, m.release) for m in group])

    rest = list(members)
    result = test(rest)
    refused: dict[int, str] = {}
    if result.ok:
        return rest, refused
    named = [m for m in rest if _named(m, result.output)]
    if named and len(named) < len(rest):
        for m in named:
            refused[id(m)] = f"config test failed: {result.explain()}"
        rest = [m for m in rest if m not in named]
        result = test(rest)
        if result.ok:
            return rest, refused
    alone = {id(m): d.config_test(m.spec, m.release) for m in rest}
    culprits = [m for m in rest if not alone[id(m)].ok]
    for m in culprits:
        refused[id(m)] = f"config test failed: {alone[id(m)].explain()}"
    rest = [m for m in rest if m not in culprits]
    if culprits and rest:
        result = test(rest)
    if not result.ok:  # they fail only together: refuse them all
        for m in rest:
            refused[id(m)] = f"config test failed with the group: {result.explain()}"
        rest = []
    return rest, refused


def _named(m: Member, output: str) -> bool:
    """Does a config test's failure point at one of the member's files, at a line?"""
    deploy = m.spec.deploy
    for dest, src in deploy.placements() if deploy else ():
        for path in (str(dest), str(m.release.path / src)):
            at = rf"(?<![\w/.-]){re.escape(path)}"  # the whole path, not the tail of another
            if re.search(rf"{at}:\d+|line \d+ of {at}", output):
                return True
    return False


def _once(members: Sequence[Member], run: Callable[[], None]) -> None:
    """Run a step once (recorded in the first member's steps) and copy its result to
    every other member, so each report shows the group's reload."""
    first = members[0]
    before = len(first.steps.results)
    try:
        run()
    finally:
        for result in first.steps.results[before:]:
            for m in members[1:]:
                m.steps.results.append(result)


def _verify(d: Deployer, members: Sequence[Member], name: str, new: bool) -> list[Member]:
    """Every member's endpoints at once; the members whose endpoints failed."""

    def one(m: Member) -> Member | None:
        release = m.release if new else m.previous
        assert release is not None  # noqa: S101 - verify-old only with a previous release
        try:
            d.verify(m.spec, release, m.steps, name)
        except DeployFailed:
            return m
        return None

    if len(members) <= 1:
        results = [one(m) for m in members]
    else:
        with ThreadPoolExecutor(min(AT_ONCE, len(members)), thread_name_prefix="verify") as pool:
            results = list(pool.map(one, members))
    return [m for m in results if m is not None]


def _rollback(d: Deployer, members: Sequence[Member], names: list[str]) -> None:
    """Every member back to its previous release (or its links removed), one reload,
    and the old certificates verified: ROLLED_BACK, or BROKEN for a member whose old
    certificate is not served."""
    for m in members:
        m.state = replace(m.state, pending=None, failed_release=m.release.release_id)
        try:
            with m.steps.step("rollback") as notes:
                if m.previous is not None:
                    notes += d.swap(m.spec, m.previous.release_id)
                else:
                    notes += d.unswap(m.spec)
            m.outcome = Outcome.ROLLED_BACK
        except OSError as exc:
            m.steps.add("rollback", False, 0.0, f"cannot restore the previous release: {exc}")
            m.outcome = Outcome.BROKEN
    first = members[0]
    try:
        back = first.previous or first.release
        specs = [m.spec for m in members]
        _once(members, lambda: d.reload(first.spec, back, "rollback", first.steps, names,
                                        specs))  # fmt: skip
    except DeployFailed:
        for m in members:
            if m.previous is None:
                m.outcome = Outcome.BROKEN  # nothing to verify: the hook's word is all we have
    old = [m for m in members if m.previous is not None and m.outcome is Outcome.ROLLED_BACK]
    for m in _verify(d, old, "verify-old", new=False):
        m.outcome = Outcome.BROKEN
