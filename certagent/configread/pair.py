"""The keepalived pair's section: this node, its peer, the VRRP instances.

Side effects: none.
"""

from __future__ import annotations

from pathlib import Path

from .. import configspec as spec
from ..configkinds import Checker, Value
from ..model import Keepalived, OnBackup, Peer


def failover(ctx: Checker, v: Value) -> Keepalived | None:
    m = spec.FAILOVER.read(ctx, v)
    if "keepalived" not in m:
        return None
    v = m["keepalived"]
    s = spec.KEEPALIVED
    k = s.read(ctx, v)
    instance = s.get(ctx, k, "instance")
    address = s.get(ctx, k, "address")
    other = peer(ctx, k["peer"]) if "peer" in k else None
    others = instances(ctx, k["instances"], instance) if "instances" in k else {}
    if not (instance and address and other):
        return None
    return Keepalived(
        instance=instance,
        address=address,
        peer=other,
        vips=tuple(s.get(ctx, k, "vips")),
        pid_file=str(s.get(ctx, k, "pid_file")),
        dump_dir=str(s.get(ctx, k, "dump_dir")),
        dump_timeout=s.get(ctx, k, "dump_timeout"),
        max_advert_age=s.get(ctx, k, "max_advert_age"),
        settle=s.get(ctx, k, "settle"),
        on_backup=OnBackup(s.get(ctx, k, "on_backup")),
        instances=others,
    )


def instances(ctx: Checker, v: Value, default: str | None) -> dict[str, tuple[str, ...]]:
    """failover.keepalived.instances: {NAME: {vips: [...]}}, besides `instance`."""
    out = {}
    for name, sub in (spec.INSTANCES.convert(ctx, v) or {}).items():
        if name == default:
            ctx.error(sub, f"{name} is already `instance`; list only the others here")
            continue
        out[name] = tuple(spec.INSTANCE.get(ctx, spec.INSTANCE.read(ctx, sub), "vips"))
    return out


def peer(ctx: Checker, v: Value) -> Peer | None:
    s = spec.PEER
    m = s.read(ctx, v)
    command = s.get(ctx, m, "command")
    address = s.get(ctx, m, "address")
    quote = s.get(ctx, m, "quote", Path(command[0]).name == "ssh" if command else True)
    if not (command and address):
        return None
    return Peer(
        command=tuple(command),
        address=address,
        pid_file=str(s.get(ctx, m, "pid_file")),
        dump_dir=str(s.get(ctx, m, "dump_dir")),
        certagent=tuple(s.get(ctx, m, "certagent")),
        quote=quote,
        timeout=s.get(ctx, m, "timeout"),
    )
