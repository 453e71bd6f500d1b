"""The YAML tree (with positions) -> validated, frozen `model.Config`: each section
read by its description (`configspec`), then the rules across keys (rules.py).
Every problem is collected, with its key path and line, by the `Checker`.

    common.py       trust roots, endpoints, the CA, staging, policy
    certificate.py  each certificate: names, challenges, deploy, staging target
    watch.py        monitor, notify, heartbeat
    pair.py         the keepalived pair
    rules.py        the rules across keys, each a named validator

Side effects: none (files named are only looked for).
"""

from __future__ import annotations

from .. import configspec as spec
from ..configkinds import Checker, Value
from ..model import Config, Monitor, Notify, Policy
from . import certificate, common, pair, watch
from .rules import RULES, Draft


def read(ctx: Checker, root: Value) -> Config | None:
    """The configuration, or None when a problem was found (then in `ctx.problems`)."""
    top = spec.TOP
    m = top.read(ctx, root)
    if "defaults" in m:  # its unknown keys (each certificate reads its values)
        spec.DEFAULTS.read(ctx, m["defaults"])
    if "certificates" not in m:
        ctx.error(root, "missing required key 'certificates'")  # (or certificates_dir)
    state_dir = top.get(ctx, m, "state_dir")
    cas = [common.ca(ctx, v) for v in top.get(ctx, m, "ca", [])]
    ca = cas[0] if cas and None not in cas else None
    draft = Draft(
        state_dir=state_dir,
        staging=common.staging(ctx, m["staging"], state_dir) if "staging" in m else None,
        failover=pair.failover(ctx, m["failover"]) if "failover" in m else None,
        certs=certificate.certificates(ctx, m["certificates"]) if "certificates" in m else (),
        monitor=watch.monitor(ctx, m["monitor"]) if "monitor" in m else Monitor(),
        policy=common.policy(ctx, m["policy"]) if "policy" in m else Policy(),
        notify=watch.notify(ctx, m["notify"]) if "notify" in m else Notify(),
        cas=tuple(c for c in cas if c is not None),
    )
    textfile = None
    if "metrics" in m:
        textfile = spec.METRICS.get(ctx, spec.METRICS.read(ctx, m["metrics"]), "textfile")
    heartbeat = watch.heartbeat(ctx, m["heartbeat"]) if "heartbeat" in m else None
    for rule in RULES:
        rule(ctx, root, draft)
    if ca is None:
        return None
    return Config(
        ctx.source,
        state_dir,
        ca,
        draft.policy,
        draft.certs,
        tuple(top.get(ctx, m, "template_dirs")),
        draft.staging,
        draft.monitor,
        textfile,
        draft.notify,
        heartbeat,
        draft.failover,
        top.get(ctx, m, "state_group"),
        fallbacks=tuple(c for c in cas[1:] if c is not None),
    )
