"""Rehearsal: the production pipeline, run against the staging CA into the staging target.

Not a dry-run flag threaded through the code: the same `pipeline.renew_one`, given a
staging `Context` (the staging CA's issuer, the staging state directory, a deployer
whose hooks see CERTAGENT_STAGE=staging) and a certificate spec whose deploy section
is the staging target's. It orders, stages, runs the config test and the hook, and
verifies the staging endpoint; production is not touched, whatever happens.

A passing rehearsal is remembered with a digest of every input that shapes the
deploy (names, key type, template sources and vars, test and hook commands, the
staging target, the staging CA), so an unchanged setup is not rehearsed on every run.

Side effects: through the staging context (network, staging state directory,
subprocesses) and its rehearsal records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import pipeline, render, system
from .context import Context
from .errors import CAUnavailable, CAUnreachable, RehearsalFailed
from .model import (
    CertResult,
    CertSpec,
    Config,
    Decision,
    DeploySpec,
    LinkSpec,
    Outcome,
    Staging,
    TemplateSpec,
    Unreachable,
)
from .steps import Steps
from .store import rehearsal as rehearsal_record

log = logging.getLogger(__name__)


def staging_spec(spec: CertSpec, staging: Staging) -> CertSpec:
    """The certificate as rehearsal deploys it: same names, key and templates; the
    staging target's directory, vars, commands and endpoints."""
    target, deploy = spec.staging, spec.deploy
    if target is None or deploy is None:
        raise ValueError(f"certificate {spec.name} has no staging target")
    rehearsal = DeploySpec(
        templates=tuple(
            TemplateSpec(t.template, target.dir / t.dest.name) for t in deploy.templates
        ),
        links=tuple(LinkSpec(link.file, target.dir / link.dest.name) for link in deploy.links),
        vars={**deploy.vars, **target.vars},
        test=target.test,
        hook=target.hook,
        user=target.user,
        endpoints=target.endpoints,
        verify_timeout=target.verify_timeout,
        trust_roots=target.trust_roots or staging.ca.trust_roots,
        min_free_bytes=deploy.min_free_bytes,
    )
    return replace(
        spec,
        challenge=target.challenge or spec.challenge,
        challenges={} if target.challenge else spec.challenges,
        deploy=rehearsal,
        staging=None,
    )


MAX_HASHED = 16 << 20  # a script or a binary; a larger file is named by size and mtime


def command_files(spec: CertSpec) -> dict[str, str]:
    """SHA-256 of every file the hooks and config tests run or name: the program (found
    on PATH like the runner does) and each argument that is an existing file. An edited
    reload script is a new input, so it is rehearsed before it reaches production."""
    commands = []
    for section in (spec.deploy, spec.staging):
        if section is not None:
            commands += [c for c in (section.test, section.hook) if c is not None]
    out: dict[str, str] = {}
    for command in commands:
        for i, arg in enumerate(command.argv):
            path = shutil.which(arg, path=system.BASE_ENV["PATH"]) if i == 0 else None
            candidate = Path(path) if path else Path(arg)
            if "{" in arg or not candidate.is_absolute() or not candidate.is_file():
                continue
            out[str(candidate)] = _file_digest(candidate)
    return out


def _file_digest(path: Path) -> str:
    try:
        st = path.stat()
        if st.st_size > MAX_HASHED:
            return f"size {st.st_size} mtime {st.st_mtime_ns}"
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def inputs_digest(spec: CertSpec, staging: Staging, template_dirs: tuple[Path, ...]) -> str:
    """SHA-256 over everything that shapes the deploy; a change forces a rehearsal."""
    deploy = spec.deploy
    templates = {}
    for t in deploy.templates if deploy else ():
        templates[t.template] = render.sources(t.template, template_dirs)
    inputs: dict[str, Any] = {
        "names": sorted(spec.names),
        "key_type": spec.key_type.value,
        "production": asdict(deploy) if deploy else None,
        "staging_target": asdict(spec.staging) if spec.staging else None,
        "template_sources": templates,
        "staging_ca": staging.ca.directory,
        "command_files": command_files(spec),
    }
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class Rehearsal:
    """Satisfies context.Rehearser for `renew`; `run` alone is `certagent rehearse`."""

    config: Config  # production
    staging: Staging
    make_ctx: Callable[[], Context]  # the staging context, built on first use
    _ctx: Context | None = None

    @property
    def ctx(self) -> Context:
        """Staging issuer, store and deployer; a run with nothing due never builds them."""
        if self._ctx is None:
            self._ctx = self.make_ctx()
        return self._ctx

    def __call__(self, spec: CertSpec, steps: Steps) -> None:
        """The gate: skip when remembered, else rehearse; raise RehearsalFailed to stop."""
        digest = inputs_digest(spec, self.staging, self.config.template_dirs)
        memo = rehearsal_record.read(self.ctx.store, spec.name)
        now = self.ctx.clock.now()
        if memo is not None and memo[0] == digest:
            age = now - memo[1]
            if age.total_seconds() < self.staging.remember_for:
                steps.add(
                    "rehearse",
                    True,
                    0.0,
                    f"not repeated: passed {memo[1]:%Y-%m-%d %H:%M} UTC with the same inputs "
                    f"(staging release {memo[2]})",
                )
                return
        start = self.ctx.clock.monotonic()
        result = self.run(spec, digest)
        for s in result.steps:
            steps.add(f"staging:{s.step}", s.ok, s.seconds, s.detail)
        seconds = self.ctx.clock.monotonic() - start
        if result.outcome is Outcome.RENEWED:
            steps.add("rehearse", True, seconds, f"passed on {self.staging.ca.directory}")
            return
        unreachable = result.error_code in (CAUnreachable.code, CAUnavailable.code)
        if unreachable and self.staging.on_unreachable is Unreachable.PROCEED:
            note = (
                f"NOT rehearsed: the staging CA is unreachable ({result.error}); going on "
                "because staging.on_unreachable is 'proceed'"
            )
            log.warning("%s: %s", spec.name, note)
            steps.add("rehearse", True, seconds, note, override="staging-unreachable")
            return
        failed = next((f"staging:{s.step}" for s in result.steps if not s.ok), "staging")
        message = f"rehearsal on the staging CA failed at {failed}: {result.error}"
        if unreachable:
            message += " (staging.on_unreachable: fail; production is not ordered)"
        steps.add("rehearse", False, seconds, message)
        raise RehearsalFailed(message)

    def run(self, spec: CertSpec, digest: str | None = None) -> CertResult:
        """One full rehearsal under the staging lock; remembered when it passes."""
        digest = digest or inputs_digest(spec, self.staging, self.config.template_dirs)
        with self.ctx.store.lock():
            # a failure must not leave an old pass behind
            rehearsal_record.forget(self.ctx.store, spec.name)
            staged = staging_spec(spec, self.staging)  # always a new staging order
            result = pipeline.renew_one(self.ctx, staged, True, new_order=True)
            if result.outcome is Outcome.RENEWED and result.release is not None:
                now = self.ctx.clock.now()
                rehearsal_record.write(self.ctx.store, spec.name, digest, now, result.release)
        return replace(result, decision=Decision(True, "rehearsal on the staging CA"))
