"""`certagent health`: keepalived's track script. Does this node serve a valid
certificate for every name it should?

It judges only on evidence: a certificate that is wrong, untrusted, expired or for
another name, no certificate, or a refused connection. A timeout alone is not evidence
(an overloaded machine answers slowly on both nodes at once, and failing both would
take the VIP away from the pair): it is reported and counted as healthy, and
keepalived's own `fall` and `rise` count repeated verdicts. Nor is another certificate
served for a certificate never deployed on this node: one just added to the config is
served by neither node yet, and failing both would refuse its first deploy (the
MASTER's gate wants the BACKUP's track script GOOD). It imports only what it needs (no
ACME, no templates) and reads the configuration and whether each certificate has a
`current` link.

Side effects: network (one TLS handshake per endpoint on this node's own address).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import layout
from .model import Config
from .verify import on_address, probe, trust_context


@dataclass(frozen=True)
class Health:
    ok: bool
    lines: tuple[str, ...]


def health(config: Config, timeout: float = 2.0, instance: str | None = None) -> Health:
    """Probe every deploy endpoint on this node's own address (`failover.keepalived.
    address`; without failover, as configured), chain, name and dates verified. With
    `instance`, only the certificates that follow that VRRP instance (the track script
    of each instance judges its own VIP's certificates)."""
    lines, ok = [], True
    for spec in config.certificates:
        if spec.deploy is None or not spec.deploy.endpoints:
            continue
        failover = config.failover
        if instance and failover is not None and failover.instance_of(spec)[0] != instance:
            continue
        ctx = trust_context(spec.deploy.trust_roots)
        targets = spec.deploy.endpoints
        if config.failover is not None:
            targets = on_address(targets, config.failover.address)
        for target in targets:
            served = probe(target, ctx, timeout)
            if served.fingerprint is not None:
                lines.append(f"{spec.name} {target}: OK {served.fingerprint[:16]}…")
            elif served.timed_out:
                lines.append(f"{spec.name} {target}: {served.error} (slow, not evidence)")
            elif served.refused_cert and not layout.deployed(config.state_dir, spec.name):
                lines.append(
                    f"{spec.name} {target}: {served.error} (never deployed on this node yet, "
                    "not evidence)"
                )
            else:
                ok = False
                lines.append(f"{spec.name} {target}: {served.error}")
    if not lines:
        ok = False  # a health check that checks nothing must not pass
        lines.append(f"no deploy endpoints configured in {config.source}: nothing to check")
    return Health(ok, tuple(lines))
