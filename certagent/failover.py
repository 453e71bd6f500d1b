"""A keepalived pair: only the MASTER orders; the BACKUP must be able to take the VIP
and must already serve the new certificate before the MASTER swaps.

`Failover` reads both nodes' keepalived (through `keepalived.dump`, locally and
through the peer's command prefix) and pushes a release to the peer, where
`certagent receive` deploys it with the peer's own config test, hook and checks.
`FailoverDeployer` is the deployer of a failover node: on the MASTER it adds the
readiness gate to preflight and the rollout to the peer before its own swap, and
verifies on this node's own address as well as on the configured endpoints (the
VIP); on the BACKUP (receiving) it verifies on its own address only, because the
VIP is served by the other node.

Side effects: subprocesses (keepalived dumps, the peer prefix), network (TLS
probes of the peer), all through injected ports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import __version__, keepalived
from .deploy import Deployer, Prober
from .errors import CertagentError, GateRefused
from .keepalived import Expect, Instance, KeepalivedError, VrrpState, Where
from .model import CertSpec, DeploySpec, Endpoint, Keepalived, OnBackup, Release
from .steps import Steps
from .store import Store
from .system import Clock, RunResult
from .verify import on_address

log = logging.getLogger(__name__)

PAYLOAD_SCHEMA = 1
MAX_PAYLOAD = 1 << 20  # a key and a chain; anything larger is not ours


class PeerFailed(CertagentError):
    """The peer did not take the release: this node must not swap."""

    code = "peer-failed"


@dataclass(frozen=True)
class Readiness:
    problems: tuple[str, ...]
    facts: tuple[str, ...]  # what was seen, for the report


class Failover:
    """One run's view of the pair. `override` (a reason) skips every keepalived check
    and the peer rollout: this node then deploys alone, loudly."""

    def __init__(
        self,
        spec: Keepalived,
        run: keepalived.Run,
        override: str | None = None,
    ) -> None:
        self.spec = spec
        self.run = run
        self.override = override
        self.local_where = Where("this node", (), spec.pid_file, spec.dump_dir)
        peer = spec.peer
        self.peer_where = Where(
            f"peer {peer.address}", peer.command, peer.pid_file, peer.dump_dir, peer.quote
        )
        self.expect = Expect(spec.instance, frozenset(spec.vips), spec.max_advert_age)

    def expect_for(self, cert: CertSpec | None) -> Expect:
        """The instance a certificate follows (one pair may carry several, one per VIP)."""
        if cert is None:
            return self.expect
        name, vips = self.spec.instance_of(cert)
        return Expect(name, frozenset(vips), self.spec.max_advert_age)

    # -- roles and readiness -------------------------------------------------------------

    def may_order(self, spec: CertSpec) -> str | None:
        """None: this node may order and deploy. A reason: skip (a BACKUP, configured to
        skip). Raises GateRefused when this node is neither, or the peer is not ready."""
        if self.override is not None:
            return None
        try:
            local_dump = keepalived.dump(self.local_where, self.run, self.spec.dump_timeout)
        except KeepalivedError as exc:
            raise GateRefused(f"failover: {exc}") from exc
        expect = self.expect_for(spec)
        local, problems = keepalived.local_problems(local_dump, expect)
        if local is None:
            raise GateRefused("failover: " + "; ".join(problems))
        if local.state is VrrpState.BACKUP:
            why = (
                f"this node is the keepalived BACKUP of {expect.instance}: the MASTER "
                f"orders (http-01 reaches the VIP) and deploys here"
            )
            if self.spec.on_backup is OnBackup.SKIP:
                return why
            raise GateRefused(f"{why} (failover.keepalived.on_backup: fail)")
        if local.state is not VrrpState.MASTER:
            raise GateRefused(
                f"failover: this node's {expect.instance} is {local.state.name}, neither "
                "MASTER nor BACKUP: not ordering"
            )
        if spec.deploy is not None:  # do not spend an order the gate would refuse anyway
            ready = self.readiness(local_dump, spec)
            if ready.problems:
                raise GateRefused("failover: " + "; ".join(ready.problems))
        return None

    def readiness(
        self, local_dump: Mapping[str, Instance] | None = None, cert: CertSpec | None = None
    ) -> Readiness:
        """Can the peer take the VIP (of `cert`'s instance) from us right now? From a fresh
        dump of the peer, and of this node unless the caller has just taken one."""
        expect = self.expect_for(cert)
        if local_dump is None:
            try:
                local_dump = keepalived.dump(self.local_where, self.run, self.spec.dump_timeout)
            except KeepalivedError as exc:
                return Readiness((str(exc),), ())
        local, problems = keepalived.local_problems(local_dump, expect)
        facts = [f"this node: {local.describe()}"] if local else []
        if local is None:
            return Readiness(tuple(problems), tuple(facts))
        try:
            peer_dump = keepalived.dump(self.peer_where, self.run, self.spec.dump_timeout)
        except KeepalivedError as exc:
            return Readiness((*problems, str(exc)), tuple(facts))
        problems += keepalived.peer_problems(peer_dump, local, expect, self.peer_where.label)
        peer = peer_dump.get(expect.instance)
        if peer is not None:
            facts.append(f"{self.peer_where.label}: {peer.describe()}")
        return Readiness(tuple(problems), tuple(facts))

    # -- the peer ------------------------------------------------------------------------

    def push(self, spec: CertSpec, release: Release) -> tuple[str, ...]:
        """Hand the release to the peer's `certagent receive`, which deploys it there.
        Returns the peer's steps as notes; raises PeerFailed with the peer's reason."""
        payload = json.dumps(
            {
                "schema": PAYLOAD_SCHEMA,
                "certagent": __version__,  # said back in a refusal on a schema mismatch
                "name": spec.name,
                "release": release.release_id,
                "ca": release.ca,
                "fullchain": (release.path / "fullchain.pem").read_text(),
                "key": (release.path / "privkey.pem").read_text(),
            }
        ).encode()
        peer = self.spec.peer
        argv = self.peer_where.argv([*peer.certagent, "receive", spec.name, "--json"])
        result = self.run(argv, peer.timeout, {}, stdin=payload, limit=keepalived.OUTPUT_LIMIT)
        report = _report(result)
        where = self.peer_where.label
        if report is None:
            raise PeerFailed(f"{where}: `certagent receive` gave no report: {result.describe()}")
        certs = report.get("certificates") or [{}]
        cert = certs[0] if isinstance(certs, list) and certs else {}
        steps = cert.get("steps", []) if isinstance(cert, dict) else []
        notes = tuple(
            f"{s.get('step')} {'ok' if s.get('ok') else 'FAILED'}"
            for s in steps
            if isinstance(s, dict)
        )
        if not result.ok:
            error = cert.get("error") if isinstance(cert, dict) else None
            outcome = cert.get("outcome") if isinstance(cert, dict) else None
            raise PeerFailed(
                f"{where}: deploy {outcome or 'failed'} (exit {result.returncode}): "
                f"{error or report.get('error') or result.output.strip()[-300:]}"
            )
        return notes


def _report(result: RunResult) -> Mapping[str, object] | None:
    """The peer's JSON report: the last output line that is one (logs may precede it)."""
    for line in reversed(result.output.splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                return data
    return None


class FailoverDeployer(Deployer):
    """The deployer of a keepalived node. `master`: gate, peer first, then here.
    Not `master` (receiving from the MASTER): a plain deploy checked on this node."""

    groups = False  # the peer-first rollout goes certificate by certificate

    def __init__(
        self,
        store: Store,
        runner: keepalived.Run,
        prober: Callable[[DeploySpec], Prober],
        clock: Clock,
        failover: Failover,
        master: bool,
    ) -> None:
        super().__init__(store, runner, prober, clock)
        self.failover = failover
        self.master = master
        self.ready_at: float | None = None  # monotonic time of the last readiness check

    def gate(self, spec: CertSpec, release: Release, steps: Steps) -> None:
        if not self.master:
            return super().gate(spec, release, steps)
        with steps.step("preflight") as notes:
            problems = self.preflight(spec, release)
            if self.failover.override is not None:
                msg = (
                    f"failover gate OVERRIDDEN ({self.failover.override}): deploying on this "
                    "node only, the peer is neither checked nor updated"
                )
                log.warning("%s: %s", spec.name, msg)
                notes.append(msg)
            else:
                ready = self.failover.readiness(cert=spec)
                problems += [f"failover: {p}" for p in ready.problems]
                notes += ready.facts
            if problems:
                raise GateRefused("; ".join(problems))
            notes.append("config test, permissions and disk space ok")

    def before_swap(self, spec: CertSpec, release: Release, steps: Steps) -> None:
        if not self.master or self.failover.override is not None:
            return
        deploy = spec.deploy
        if deploy is None:  # deploy() is only called with a deploy section
            return
        label = self.failover.peer_where.label
        with steps.step("peer-deploy", label) as notes:
            notes += self.failover.push(spec, release)
        endpoints = on_address(deploy.endpoints, self.failover.spec.peer.address)
        if endpoints:
            with steps.step("peer-verify") as notes:
                failures = self.prober(deploy).wait_for(
                    endpoints, release.fingerprint_sha256, deploy.verify_timeout
                )
                if failures:
                    raise PeerFailed(f"{label}: " + "; ".join(failures))
                notes.append(f"{label} serves {release.fingerprint_sha256[:16]}…")
        # Readiness again, at the moment that counts: the peer took the release, but its
        # keepalived may have stopped, gone FAULT or been cut off meanwhile.
        with steps.step("peer-ready") as notes:
            ready = self.failover.readiness(cert=spec)
            if ready.problems:
                raise GateRefused(
                    "failover: the peer is no longer ready to take the VIP, not swapping "
                    "here: " + "; ".join(ready.problems)
                )
            self.ready_at = self.clock.monotonic()
            notes += ready.facts

    def swap(self, spec: CertSpec, release_id: str) -> list[str]:
        notes = super().swap(spec, release_id)
        if self.master and self.ready_at is not None:
            gap = (self.clock.monotonic() - self.ready_at) * 1000
            notes.append(f"{gap:.0f} ms after the peer was last seen ready")
            self.ready_at = None
        return notes

    def endpoints(self, spec: CertSpec, step: str) -> tuple[Endpoint, ...]:
        """This node's own address always; the VIP too when the MASTER deploys. Rolling
        back, only this node: the VIP may already be on the peer, with the new certificate."""
        deploy = spec.deploy
        if deploy is None:
            return ()
        own = on_address(deploy.endpoints, self.failover.spec.address)
        if self.master and step == "verify":
            return own + tuple(e for e in deploy.endpoints if e not in own)
        return own
