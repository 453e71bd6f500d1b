"""Deploy a staged release: preflight -> swap -> reload (hook) -> verify -> commit | rollback.

A release carries its rendered configs (`rendered/<file>`), which point at the
release's own key and chain; each configured destination is a symlink through
the certificate's `current` link. So one `os.replace` of `current` swaps the
certificate and every config at once, the config test sees exactly what will go
live, and rollback is the same flip back.

Side effects: filesystem (links, state), subprocesses (config test, hook) and
network (the TLS probe), all through injected ports.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from . import layout, render
from .deployfiles import BACKUP_SUFFIX, candidate_view, link_dest, unreadable_by
from .errors import CertagentError, GateRefused
from .hookenv import hook_env
from .model import CertSpec, CertState, Command, DeploySpec, Endpoint, Outcome, Release
from .steps import Steps
from .store import Store
from .system import Clock, RunResult

RENDERED = layout.RENDERED
CLOCK_SLACK = dt.timedelta(seconds=60)  # a certificate starting sooner than this is fine


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], timeout: float, env: Mapping[str, str]
    ) -> RunResult: ...


class Prober(Protocol):
    def wait_for(
        self, endpoints: Sequence[Endpoint], fingerprint: str, timeout: float
    ) -> list[str]: ...


class DeployFailed(CertagentError):
    """A deploy step failed; carries every reason."""


def render_configs(
    spec: CertSpec,
    release_dir: Path,
    current_dir: Path,
    template_dirs: Sequence[Path],
    stage: str = "production",
) -> dict[str, bytes]:
    """The release's rendered files, keyed by their path inside the release."""
    if spec.deploy is None:
        return {}
    context: dict[str, Any] = {
        "name": spec.name,
        "names": list(spec.names),
        "release_id": release_dir.name,
        "release_dir": str(release_dir),
        "current_dir": str(current_dir),
        "cert": str(release_dir / layout.CERT),
        "chain": str(release_dir / layout.CHAIN),
        "fullchain": str(release_dir / layout.FULLCHAIN),
        "key": str(release_dir / layout.KEY),
        "bundle": str(release_dir / layout.BUNDLE),
        "stage": stage,
        "vars": dict(spec.deploy.vars),
    }
    return {
        f"{RENDERED}/{t.dest.name}": render.render(t.template, context, template_dirs).encode()
        for t in spec.deploy.templates
    }


class Deployer:
    def __init__(
        self,
        store: Store,
        runner: Runner,
        prober: Callable[[DeploySpec], Prober],
        clock: Clock,
        stage: str = "production",
    ) -> None:
        self.store = store
        self.run = runner
        self.prober = prober
        self.clock = clock
        self.stage = stage  # "staging" when rehearsing: hooks see it as CERTAGENT_STAGE
        self._unshare: bool | None = None

    # -- the whole path ---------------------------------------------------------------

    def deploy(
        self,
        spec: CertSpec,
        release: Release,
        previous: Release | None,
        state: CertState,
        steps: Steps,
    ) -> tuple[Outcome, CertState]:
        """Preflight, swap, hook, verify; on a failure after the swap, roll back."""
        self.gate(spec, release, steps)
        self.before_swap(spec, release, steps)
        prev_id = previous.release_id if previous else None
        state = replace(state, pending=(release.release_id, prev_id))
        self.store.write_state(spec.name, state)  # a kill from here on is resumed next run
        with steps.step("swap", f"current -> {release.release_id}") as notes:
            notes += self.swap(spec, release.release_id)
        return self.finish(spec, release, previous, state, steps)

    def finish(
        self,
        spec: CertSpec,
        release: Release,
        previous: Release | None,
        state: CertState,
        steps: Steps,
    ) -> tuple[Outcome, CertState]:
        """After the swap: hook and verify; commit, or roll back to `previous`."""
        try:
            self.reload(spec, release, "deploy", steps)
            self.verify(spec, release, steps)
        except DeployFailed:
            return self.rollback(spec, release, previous, state, steps)
        return Outcome.RENEWED, replace(
            state,
            pending=None,
            failed_release=None,
            previous_release=previous.release_id if previous else None,
        )

    def rollback(
        self,
        spec: CertSpec,
        failed: Release,
        previous: Release | None,
        state: CertState,
        steps: Steps,
    ) -> tuple[Outcome, CertState]:
        """Flip back, run the hook, and judge by what is served: BROKEN only if the old
        certificate is not verified (a failing hook is recorded, but nginx, for one, keeps
        serving its old configuration when a reload is refused)."""
        state = replace(state, pending=None, failed_release=failed.release_id)
        try:
            with steps.step("rollback") as notes:
                if previous is not None:
                    notes += self.swap(spec, previous.release_id)
                else:
                    notes += self.unswap(spec)
        except OSError as exc:
            steps.add("rollback", False, 0.0, f"cannot restore the previous release: {exc}")
            return Outcome.BROKEN, state
        try:
            self.reload(spec, previous or failed, "rollback", steps)
        except DeployFailed:
            if previous is None:
                return Outcome.BROKEN, state  # nothing to verify: the hook's word is all we have
        if previous is None:
            return Outcome.ROLLED_BACK, state
        try:
            self.verify(spec, previous, steps, "verify-old")
        except DeployFailed:
            return Outcome.BROKEN, state
        return Outcome.ROLLED_BACK, state

    # -- steps ------------------------------------------------------------------------

    def gate(self, spec: CertSpec, release: Release, steps: Steps) -> None:
        """The preflight step: raises GateRefused with every reason not to swap (this
        certificate's own checks and the shared ones, `group_gate`, as for a group of one)."""
        skipped = self.overridden([spec])
        if skipped is not None:
            steps.add("override", True, 0.0, skipped, override="failover-override")
        with steps.step("preflight") as notes:
            problems = self.preflight(spec, release)
            shared, seen = self.group_gate([spec])
            problems += shared
            notes += seen
            if problems:
                raise GateRefused("; ".join(problems))
            notes.append("config test, permissions and disk space ok")

    def before_swap(self, spec: CertSpec, release: Release, steps: Steps) -> None:
        """What must succeed elsewhere before this node swaps (a failover peer): nothing here."""

    # -- a group's shared steps (grouped.py); one certificate's own steps, by default ---

    def group_tag(self, spec: CertSpec) -> object:
        """What certificates must share besides the test and hook to be deployed together
        (on a failover pair, the VRRP instance they follow): nothing more here."""
        return None

    def overridden(self, specs: Sequence[CertSpec]) -> str | None:
        """What safety the operator skipped for these certificates, said for the audit
        (a failover pair's gate, `--failover-override`): nothing here."""
        return None

    def group_gate(self, specs: Sequence[CertSpec]) -> tuple[list[str], list[str]]:
        """The checks that do not depend on the certificate, run once for a group (or
        for one certificate): a failover pair's readiness. Every problem, and what was
        seen. None here."""
        return [], []

    def before_swap_group(
        self, members: Sequence[tuple[CertSpec, Release, Steps]]
    ) -> list[CertagentError | None]:
        """`before_swap` for a group: for each member, None or why it must not swap."""
        out: list[CertagentError | None] = []
        for spec, release, steps in members:
            try:
                self.before_swap(spec, release, steps)
            except CertagentError as exc:
                out.append(exc)
            else:
                out.append(None)
        return out

    def endpoints(self, spec: CertSpec, step: str) -> tuple[Endpoint, ...]:
        """Where `step` (verify, verify-old) checks what is served: the configured endpoints."""
        return _need(spec).endpoints

    def preflight(self, spec: CertSpec, release: Release, test: bool = True) -> list[str]:
        """Every reason not to swap, all at once (`test`: the config test too; a group
        runs one test for all its members instead)."""
        deploy = _need(spec)
        problems = []
        if deploy.test is not None and test:
            result = self.config_test(spec, release)
            if not result.ok:
                problems.append(f"config test failed: {result.explain()}")
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
        deploy = _need(spec)
        assert deploy.test is not None  # noqa: S101 - called only with a test
        gate = self.store.root / "gate" / release.release_id
        view = None
        if os.geteuid() == 0 and self.can_unshare():
            candidates = {
                dest: r.path / src for s, r in members for dest, src in _need(s).placements()
            }
            view = candidate_view(candidates, gate)
        env = {"CERTAGENT_GROUP": " ".join(s.name for s, _ in members)} if len(members) > 1 else {}
        try:
            if view is None:
                return self.run_command(deploy.test, spec, release, "test", extra=env)
            return self.run_command(deploy.test, spec, release, "test", wrap=view, extra=env)
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

    def swap(self, spec: CertSpec, release_id: str) -> list[str]:
        """One atomic flip of `current`; destinations are (made) links through it."""
        self.store.activate(spec.name, release_id)
        current = self.store.current_link(spec.name)
        return [
            n for dest, src in _need(spec).placements() if (n := link_dest(dest, current / src))
        ]

    def unswap(self, spec: CertSpec) -> list[str]:
        """No previous release: remove our links and put back what they replaced."""
        notes = []
        for dest, _ in _need(spec).placements():
            backup = dest.with_name(dest.name + BACKUP_SUFFIX)
            if dest.is_symlink():
                if backup.exists():
                    os.replace(backup, dest)
                    notes.append(f"restored {dest} from {backup.name}")
                else:
                    dest.unlink()
                    notes.append(f"removed {dest}")
        with contextlib.suppress(FileNotFoundError):
            self.store.current_link(spec.name).unlink()
        return notes

    def reload(
        self,
        spec: CertSpec,
        release: Release,
        action: str,
        steps: Steps,
        group: Sequence[str] = (),
        members: Sequence[CertSpec] = (),
    ) -> None:
        """The post-run hook; `group`: the names of a group it reloads for at once (and
        `members` their specs). With `deploy.haproxy_socket`, haproxy's runtime API
        first: every linked bundle replaced in place, no reload; the hook if it fails."""
        deploy = _need(spec)
        hook = deploy.hook
        if hook is None and deploy.haproxy_socket is None:
            return
        name = "reload" if action == "deploy" else "reload-old"
        extra = {"CERTAGENT_GROUP": " ".join(group)} if group else {}
        with steps.step(name) as notes:
            if deploy.haproxy_socket is not None:
                refused = self.runtime_update(deploy.haproxy_socket, [spec, *members], notes)
                if refused is None:
                    return
                if hook is None:
                    raise DeployFailed(f"haproxy's runtime API: {refused}")
                notes.append(f"haproxy's runtime API: {refused}; reloading instead")
            assert hook is not None  # noqa: S101 - returned above when there is none
            result = self.run_command(hook, spec, release, action, extra=extra)
            if not result.ok:
                raise DeployFailed(f"post-run hook failed: {result.explain()}")
            if group:
                notes.append(f"once for {len(group)} certificates: {' '.join(group)}")
            notes.append(result.output.strip()[-500:])

    def runtime_update(
        self, sock: Path, specs: Sequence[CertSpec], notes: list[str]
    ) -> str | None:
        """Each linked bundle, as `current` now shows it, replaced in place in haproxy;
        None when all were, else why not (the caller reloads instead)."""
        from .haproxy import RuntimeApiError, update  # deferred: haproxy users only

        unique = {s.name: s for s in specs}.values()
        bundles = [link.dest for s in unique for link in _need(s).links
                   if link.file == layout.BUNDLE]  # fmt: skip
        if not bundles:
            return "no `bundle` among deploy.links to update"
        try:
            for dest in bundles:
                notes.append(update(sock, dest, dest.read_bytes(), 10.0))
        except (RuntimeApiError, OSError) as exc:
            return str(exc)
        notes.append("updated over haproxy's runtime API: no reload")
        return None

    def verify(self, spec: CertSpec, release: Release, steps: Steps, name: str = "verify") -> None:
        deploy = _need(spec)
        endpoints = self.endpoints(spec, name)
        if not endpoints:
            return
        with steps.step(name) as notes:
            failures = self.prober(deploy).wait_for(
                endpoints, release.fingerprint_sha256, deploy.verify_timeout
            )
            if failures:
                raise DeployFailed("; ".join(failures))
            notes.append(
                f"{', '.join(f'{e.host}:{e.port}' for e in endpoints)} "
                f"serve {release.fingerprint_sha256[:16]}…"
            )

    def run_command(
        self,
        command: Command,
        spec: CertSpec,
        release: Release,
        action: str,
        wrap: Sequence[str] = (),
        extra: Mapping[str, str] | None = None,
    ) -> RunResult:
        deploy = _need(spec)
        config = (
            str(release.path / RENDERED / deploy.templates[0].dest.name) if deploy.templates else ""
        )
        argv = [
            a.replace("{config}", config)
            .replace("{release}", str(release.path))
            .replace("{name}", spec.name)
            for a in command.argv
        ]
        env = {**hook_env(command, spec, release, action, self.stage), **(extra or {})}
        result = self.run([*wrap, *argv], command.timeout, env)
        # The report names the operator's command, never the gate's wrapper around it.
        return replace(result, argv=tuple(argv)) if wrap else result


def _need(spec: CertSpec) -> DeploySpec:
    if spec.deploy is None:
        raise DeployFailed(f"certificate {spec.name} has no deploy section")
    return spec.deploy
