"""A keepalived pair: only the MASTER orders; the BACKUP must be able to take the VIP
and must already serve the new certificate before the MASTER swaps.

`Failover` reads both nodes' keepalived (through `keepalived.dump`, locally and
through the peer's command prefix) and pushes a release to the peer, where
`certagent receive` deploys it with the peer's own config test, hook and checks.
`FailoverPeer` is a failover node's step in the deploy flow: on the MASTER it adds
the readiness gate to preflight and the rollout to the peer before its own swap, and
verifies on this node's own address as well as on the configured endpoints (the
VIP); on the BACKUP (receiving) it verifies on its own address only, because the
VIP is served by the other node.

Side effects: subprocesses (keepalived dumps, the peer prefix), network (TLS
probes of the peer), all through injected ports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import __version__, crypto, keepalived, layout
from .crypto import PrivateKey
from .errors import CertagentError, GateRefused, UsageError
from .keepalived import Expect, Instance, KeepalivedError, VrrpState, Where
from .model import CertSpec, DeploySpec, Endpoint, Keepalived, OnBackup, Release
from .system import Clock, RunResult
from .verify import on_address

if TYPE_CHECKING:
    from .deploy import Member, Prober

log = logging.getLogger(__name__)

PAYLOAD_SCHEMA = 1  # one release: {"schema": 1, "name": ..., "key": ..., ...}
GROUP_SCHEMA = 2  # several, deployed there as one group: {"schema": 2, "releases": [...]}
MAX_PAYLOAD = 1 << 20  # a key and a chain; anything larger is not ours
MAX_GROUP = 50  # releases in one push; a larger group goes to the peer in several
MAX_GROUP_PAYLOAD = 16 * MAX_PAYLOAD  # what `receive` reads at most


class PeerFailed(CertagentError):
    """The peer did not take the release: this node must not swap."""

    code = "peer-failed"


@dataclass(frozen=True)
class Handed:
    """One release as the MASTER handed it over (the receiving side)."""

    name: str
    key: PrivateKey
    fullchain: bytes
    source: str  # the MASTER's release id
    ca: str


@dataclass(frozen=True)
class Pushed:
    """What the peer did with one release of a push: its steps, or why it failed."""

    notes: tuple[str, ...]
    error: PeerFailed | None


@dataclass(frozen=True)
class Readiness:
    problems: tuple[str, ...]
    facts: tuple[str, ...]  # what was seen, for the report
    # the one problem is the peer's track scripts, not GOOD: what the moment of a reload
    # looks like to a health check that probes the server (waited out, up to `settle`)
    settling: bool = False


SETTLE_POLL = 0.25  # seconds between looks while the peer's track scripts settle


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
        found = keepalived.peer_problems(peer_dump, local, expect, self.peer_where.label)
        peer = peer_dump.get(expect.instance)
        if peer is not None:
            facts.append(f"{self.peer_where.label}: {peer.describe()}")
        scripts_only = (not problems and peer is not None and len(found) == 1
                        and any(s != "GOOD" for s in peer.scripts.values()))  # fmt: skip
        return Readiness(tuple(problems + found), tuple(facts), scripts_only)

    # -- the peer ------------------------------------------------------------------------

    def push_group(self, members: Sequence[tuple[CertSpec, Release]]) -> dict[str, Pushed]:
        """Hand several releases to the peer at once: it deploys them as one group (one
        config test, one reload), in pushes of at most MAX_GROUP. Per certificate, the
        peer's steps or why it did not take it."""
        out: dict[str, Pushed] = {}
        for chunk in _chunks([_entry(spec, release) for spec, release in members]):
            payload = {"schema": GROUP_SCHEMA, "certagent": __version__, "releases": chunk}
            out.update(self._receive([str(e["name"]) for e in chunk], payload))
        return out

    def _receive(self, names: Sequence[str], payload: Mapping[str, object]) -> dict[str, Pushed]:
        peer = self.spec.peer
        argv = self.peer_where.argv([*peer.certagent, "receive", *names, "--json"])
        result = self.run(
            argv,
            peer.timeout,
            {},
            stdin=json.dumps(payload).encode(),
            limit=keepalived.OUTPUT_LIMIT,
        )
        report = _report(result)
        where = self.peer_where.label
        if report is None:
            failed = PeerFailed(f"{where}: `certagent receive` gave no report: {result.describe()}")
            return {name: Pushed((), failed) for name in names}
        listed = report.get("certificates")
        certs = {
            c.get("name"): c for c in (listed if isinstance(listed, list) else [])
            if isinstance(c, dict)
        }  # fmt: skip
        return {name: _pushed(where, result, report, certs.get(name)) for name in names}


def _entry(spec: CertSpec, release: Release) -> dict[str, object]:
    return {
        "name": spec.name,
        "release": release.release_id,
        "ca": release.ca,
        "fullchain": (release.path / layout.FULLCHAIN).read_text(),
        "key": (release.path / layout.KEY).read_text(),
    }


def _chunks(entries: list[dict[str, object]]) -> Iterator[list[dict[str, object]]]:
    """At most MAX_GROUP releases and half of MAX_GROUP_PAYLOAD in one push."""
    chunk: list[dict[str, object]] = []
    size = 0
    for entry in entries:
        length = sum(len(str(v)) for v in entry.values()) + 200
        if chunk and (len(chunk) >= MAX_GROUP or size + length > MAX_GROUP_PAYLOAD // 2):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += length
    if chunk:
        yield chunk


def _pushed(where: str, result: RunResult, report: Mapping[str, object], cert: object) -> Pushed:
    """One certificate of the peer's report: taken (renewed, or already live there) or not."""
    if not isinstance(cert, dict):
        error = report.get("error") or result.output.strip()[-300:]
        return Pushed((), PeerFailed(f"{where}: not deployed (exit {result.returncode}): {error}"))
    steps = cert.get("steps")
    notes = tuple(
        f"{s.get('step')} {'ok' if s.get('ok') else 'FAILED'}"
        for s in (steps if isinstance(steps, list) else [])
        if isinstance(s, dict)
    )
    outcome = cert.get("outcome")
    if outcome in ("renewed", "skipped"):
        return Pushed(notes, None)
    failed = PeerFailed(
        f"{where}: deploy {outcome or 'failed'} (exit {result.returncode}): "
        f"{cert.get('error') or report.get('error') or result.output.strip()[-300:]}"
    )
    return Pushed(notes, failed)


def read_payload(names: Sequence[str], payload: bytes) -> list[Handed]:
    """The releases the MASTER handed over for `names` (the receiving side): one release
    (schema 1) or a group (schema 2). Raises UsageError for anything else."""
    limit = MAX_PAYLOAD if len(names) <= 1 else MAX_GROUP_PAYLOAD
    if len(payload) > limit:
        raise UsageError(f"receive: more than {limit} bytes on stdin: not a release")
    if len(names) > MAX_GROUP:
        raise UsageError(f"receive: at most {MAX_GROUP} certificates at once")
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        schema = data.get("schema")
        if schema not in (PAYLOAD_SCHEMA, GROUP_SCHEMA):
            sender = data.get("certagent", "an unknown version")
            raise UsageError(
                f"receive: the MASTER (certagent {sender}) sent release schema {schema!r}; "
                f"this node (certagent {__version__}) speaks schemas {PAYLOAD_SCHEMA} and "
                f"{GROUP_SCHEMA}: upgrade both nodes to the same certagent"
            )
        entries = [data] if schema == PAYLOAD_SCHEMA else data.get("releases")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError("`releases` is not a list of releases")
        sent = [e.get("name") for e in entries]
        if sent != list(names):
            raise ValueError(f"expected releases of {', '.join(names)}, got {sent}")
        return [
            Handed(
                name=str(e["name"]),
                key=crypto.load_key(str(e["key"]).encode()),
                fullchain=str(e["fullchain"]).encode(),
                source=str(e.get("release", "?")),
                ca=str(e.get("ca", "")),
            )
            for e in entries
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"receive: stdin is not a release from certagent: {exc}") from None


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


class FailoverPeer:
    """A keepalived node's part in the deploy flow (`deploy.Peer`). `master`: the
    readiness gate, the peer takes the releases and is seen ready again before this
    node swaps, and verify on this node's address as well as the VIP. Not `master`
    (receiving from the MASTER): nothing before the swap, verified on this node only."""

    def __init__(
        self,
        failover: Failover,
        master: bool,
        prober: Callable[[DeploySpec], Prober],
        clock: Clock,
    ) -> None:
        self.failover = failover
        self.master = master
        self.prober = prober
        self.clock = clock
        self.ready_at: dict[str, float] = {}  # name: when the peer was last seen ready for it

    @property
    def _acting(self) -> bool:
        """Whether the peer is part of this deploy: the MASTER's, without an override."""
        return self.master and self.failover.override is None

    def tag(self, spec: CertSpec) -> object:
        return self.failover.spec.instance_of(spec)[0]  # one readiness for the group

    def overridden(self, specs: Sequence[CertSpec]) -> str | None:
        if not self.master or not specs or self.failover.override is None:
            return None
        msg = (
            f"failover gate OVERRIDDEN ({self.failover.override}): deploying on this "
            "node only, the peer is neither checked nor updated"
        )
        log.warning("%s: %s", ", ".join(spec.name for spec in specs), msg)
        return msg

    def gate(self, specs: Sequence[CertSpec]) -> tuple[list[str], list[str]]:
        if not self._acting or not specs:
            return [], []
        ready = self.failover.readiness(cert=specs[0])
        return [f"failover: {p}" for p in ready.problems], list(ready.facts)

    def before_swap(self, members: Sequence[Member]) -> list[CertagentError | None]:
        """The peer takes every member in one `receive` (one config test, one reload
        there), each is verified on the peer's address, and the peer is seen ready once
        more; a member the peer did not take is refused here, the others go on."""
        if not self._acting or not members:
            return [None] * len(members)
        label = self.failover.peer_where.label
        start = self.clock.monotonic()
        pushed = self.failover.push_group([(m.spec, m.release) for m in members])
        took = self.clock.monotonic() - start
        errors: dict[str, CertagentError | None] = {}
        for m in members:
            got = pushed.get(m.spec.name) or Pushed((), PeerFailed(f"{label}: no answer for it"))
            errors[m.spec.name] = got.error
            detail = str(got.error) if got.error else "; ".join((label, *got.notes))
            m.steps.add("peer-deploy", got.error is None, took, detail)
        taken = [m for m in members if errors[m.spec.name] is None]
        errors.update(self._verify_on_peer(taken))
        taken = [m for m in taken if errors[m.spec.name] is None]
        if taken:
            try:
                self._still_ready(taken)
            except GateRefused as exc:
                errors.update((m.spec.name, exc) for m in taken)
        return [errors[m.spec.name] for m in members]

    def _still_ready(self, members: Sequence[Member]) -> None:
        """Readiness again, at the moment that counts: the peer took the releases, but its
        keepalived may have stopped, gone FAULT or been cut off meanwhile."""
        start = self.clock.monotonic()
        ready = self.failover.readiness(cert=members[0].spec)  # a group follows one instance
        while ready.settling and self.clock.monotonic() - start < self.failover.spec.settle:
            self.clock.sleep(SETTLE_POLL)  # the peer's health check has yet to see it
            ready = self.failover.readiness(cert=members[0].spec)
        took = self.clock.monotonic() - start
        if ready.problems:
            for m in members:
                m.steps.add("peer-ready", False, took, "; ".join(ready.problems))
            raise GateRefused(
                "failover: the peer is no longer ready to take the VIP, not swapping "
                "here: " + "; ".join(ready.problems)
            )
        for m in members:
            m.steps.add("peer-ready", True, took, "; ".join(ready.facts))
            self.ready_at[m.spec.name] = self.clock.monotonic()

    def swapped(self, spec: CertSpec) -> list[str]:
        seen = self.ready_at.pop(spec.name, None)
        if not self.master or seen is None:
            return []
        gap = (self.clock.monotonic() - seen) * 1000
        return [f"{gap:.0f} ms after the peer was last seen ready"]

    def _verify_on_peer(self, members: Sequence[Member]) -> dict[str, CertagentError | None]:
        """Each member's endpoints on the peer's address, all at once (one wait per
        prober, as the deployer's own verify)."""
        label = self.failover.peer_where.label
        out: dict[str, CertagentError | None] = {m.spec.name: None for m in members}
        waits: dict[int, tuple[Prober, list[tuple[Member, tuple[Endpoint, ...]]]]] = {}
        for m in members:
            deploy = m.spec.deploy
            if deploy is None:
                continue
            endpoints = on_address(deploy.endpoints, self.failover.spec.peer.address)
            if endpoints:
                prober = self.prober(deploy)
                waits.setdefault(id(prober), (prober, []))[1].append((m, endpoints))
        for prober, jobs in waits.values():
            start = self.clock.monotonic()
            results = prober.wait_all(
                [(ends, m.release.fingerprint_sha256, m.deploy.verify_timeout) for m, ends in jobs]
            )
            took = self.clock.monotonic() - start
            for (m, _), failures in zip(jobs, results, strict=True):
                fp = m.release.fingerprint_sha256
                if failures:
                    m.steps.add("peer-verify", False, took, f"{label}: " + "; ".join(failures))
                    out[m.spec.name] = PeerFailed(f"{label}: " + "; ".join(failures))
                else:
                    m.steps.add("peer-verify", True, took, f"{label} serves {fp[:16]}…")
        return out

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
