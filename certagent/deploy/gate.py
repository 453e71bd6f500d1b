"""The gate before a swap: every reason not to swap, all at once, for one certificate
or for a group sharing a web server.

    each member's own checks (permissions, clock, a damaged release, disk space)
    + the checks shared by the group (a failover pair's readiness, once)
    -> one config test with every candidate in view -> the members that may swap

A member that fails its own checks, or whose candidate alone fails the config test,
is refused and holds back no other.

Side effects: subprocesses (the config test, `runuser`, `unshare`), filesystem (the
gate's scratch view under the store), through injected ports.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from .. import layout
from ..errors import GateRefused
from ..model import CertSpec, Release
from ..store import Store
from ..system import Clock, RunResult
from .hooks import run_command
from .ports import Member, Peer, Runner, need
from .view import candidate_view, unreadable_by

CLOCK_SLACK = dt.timedelta(seconds=60)  # a certificate starting sooner than this is fine


class Gate:
    def __init__(self, store: Store, run: Runner, clock: Clock, stage: str) -> None:
        self.store = store
        self.run = run
        self.clock = clock
        self.stage = stage
        self._unshare: bool | None = None

    def check(self, members: Sequence[Member], peer: Peer) -> list[Member]:
        """The members that may swap; each other gets `error` (GateRefused with every
        reason). Each member's preflight step shows the group's time."""
        start = self.clock.monotonic()
        skipped = peer.overridden([m.spec for m in members])
        if skipped is not None:
            for m in members:
                m.steps.add("override", True, 0.0, skipped, override="failover-override")
        shared, seen = peer.gate([m.spec for m in members])  # once: e.g. the peer's readiness
        problems = {id(m): self.preflight(m.spec, m.release) + shared for m in members}
        clean = [m for m in members if not problems[id(m)]]
        passed = clean
        if clean and clean[0].deploy.test is not None:
            passed, refused = self.tested(clean)
            for key, why in refused.items():
                problems[key].append(why)
        took = self.clock.monotonic() - start
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

    def preflight(self, spec: CertSpec, release: Release) -> list[str]:
        """One certificate's own reasons not to swap, all at once (its config test is
        run by `tested`, once for the group)."""
        deploy = need(spec)
        problems = []
        if deploy.user:
            files = [release.path / layout.KEY, release.path / layout.FULLCHAIN]
            files += [release.path / src for _, src in deploy.placements()]
            problems += [p for p in (self.unreadable(f, deploy.user) for f in files) if p]
        now = self.clock.now()
        if release.not_before > now + CLOCK_SLACK:
            problems.append(
                f"the new certificate is valid only from {release.not_before:%Y-%m-%d %H:%M:%S} "
                f"UTC but this machine's clock says {now:%Y-%m-%d %H:%M:%S} UTC: its clock is "
                "behind (check NTP); clients would reject it, so it is kept and deployed later"
            )
        why = self.store.damage(release)
        if why is not None:
            problems.append(f"the staged release is damaged: {why}")
        free = shutil.disk_usage(self.store.root).free
        if free < deploy.min_free_bytes:
            problems.append(
                f"only {free // 2**20} MiB free under {self.store.root} "
                f"(deploy.min_free_mb: {deploy.min_free_bytes // 2**20})"
            )
        return problems

    # -- the config test --------------------------------------------------------------

    def tested(self, members: Sequence[Member]) -> tuple[list[Member], dict[int, str]]:
        """The members that pass one config test together, and why each other was refused.

        When the group fails, the culprits are looked for in turn: the members whose file
        the failure names at a line (nginx `in FILE:LINE`, haproxy `[FILE:LINE]`, apache
        `line N of FILE`), then those whose candidate fails alone. The rest are tested
        again without them; if they still fail, only together, they are all refused."""

        def test(group: Sequence[Member]) -> RunResult:
            return self.test_candidates([(m.spec, m.release) for m in group])

        rest = list(members)
        result = test(rest)
        refused: dict[int, str] = {}
        if result.ok:
            return rest, refused
        if len(rest) == 1:  # alone: its own test failed
            return [], {id(rest[0]): f"config test failed: {result.explain()}"}
        named = [m for m in rest if _named(m, result.output)]
        if named and len(named) < len(rest):
            for m in named:
                refused[id(m)] = f"config test failed: {result.explain()}"
            rest = [m for m in rest if m not in named]
            result = test(rest)
            if result.ok:
                return rest, refused
        alone = {id(m): self.config_test(m.spec, m.release) for m in rest}
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

    def config_test(self, spec: CertSpec, release: Release) -> RunResult:
        """The config test, seeing the candidate wherever it will be live.

        Until the swap each destination is (a link to) the live release's file, so a test
        of the main config (`nginx -t` with a site fragment in sites-enabled/) would read
        the old fragment. As root the test runs in a private mount namespace where each
        destination shows the candidate: the live file bind-mounted over by the new one,
        or, for a destination that does not exist yet, its directory replaced by a copy
        holding the candidate (subdirectories bound through). Nothing outside that
        namespace changes. Without root the test sees the live files, and says so."""
        return self.test_candidates([(spec, release)])

    def test_candidates(self, members: Sequence[tuple[CertSpec, Release]]) -> RunResult:
        """The first member's config test, run once with every member's candidates in
        view (one member: its own; a group sharing a web server: all of them)."""
        spec, release = members[0]
        deploy = need(spec)
        assert deploy.test is not None  # noqa: S101 - called only with a test
        gate = self.store.root / "gate" / release.release_id
        view = None
        if os.geteuid() == 0 and self.can_unshare():
            candidates = {
                dest: r.path / src for s, r in members for dest, src in need(s).placements()
            }
            view = candidate_view(candidates, gate)
        env = {"CERTAGENT_GROUP": " ".join(s.name for s, _ in members)} if len(members) > 1 else {}
        try:
            return run_command(self.run, deploy.test, spec, release, "test", self.stage,
                               wrap=view or (), extra=env)  # fmt: skip
        finally:
            shutil.rmtree(gate, ignore_errors=True)

    def can_unshare(self) -> bool:
        """Whether a private mount namespace can be made here (a container without
        CAP_SYS_ADMIN cannot): asked once, else the test sees the live files."""
        if self._unshare is None:
            probe = ["unshare", "--mount", "--propagation", "private", "--", "true"]
            self._unshare = shutil.which("unshare") is not None and self.run(probe, 10, {}).ok
        return self._unshare

    def unreadable(self, path: Path, user: str) -> str | None:
        """Ask the kernel, as `user`, whether it can read `path`: mode bits, POSIX ACLs and
        security modules all count. The mode-bit walk only explains a refusal."""
        if os.geteuid() != 0:
            return unreadable_by(path, user)  # cannot switch users: judge by mode bits
        result = self.run(["runuser", "-u", user, "--", "test", "-r", str(path)], 10, {})
        if result.ok:
            return None
        if result.returncode is None:
            return f"cannot check whether {user} can read {path}: {result.describe()}"
        return (
            unreadable_by(path, user) or f"user {user} cannot read {path} (ACL or security module)"
        )


def _named(m: Member, output: str) -> bool:
    """Does a config test's failure point at one of the member's files, at a line?"""
    deploy = m.spec.deploy
    for dest, src in deploy.placements() if deploy else ():
        for path in (str(dest), str(m.release.path / src)):
            at = rf"(?<![\w/.-]){re.escape(path)}"  # the whole path, not the tail of another
            if re.search(rf"{at}:\d+|line \d+ of {at}", output):
                return True
    return False
