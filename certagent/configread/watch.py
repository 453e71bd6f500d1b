"""What watches the certificates: `monitor` (thresholds, foreign endpoints), `notify`
(webhook, email) and `heartbeat`.

Side effects: none.
"""

from __future__ import annotations

from .. import configspec as spec
from ..configkinds import Checker, Value, kind_of
from ..model import Email, Endpoint, Heartbeat, Monitor, MonitorEndpoint, Notify, Webhook
from .common import roots


def notify(ctx: Checker, v: Value) -> Notify:
    m = spec.NOTIFY.read(ctx, v)
    hook = None
    if "webhook" in m:
        w = spec.WEBHOOK.read(ctx, m["webhook"])
        url = spec.WEBHOOK.get(ctx, w, "url")
        if url is not None:
            trust = roots(ctx, spec.WEBHOOK, w, m["webhook"])
            hook = spec.WEBHOOK.build(ctx, w, Webhook, url=url, trust_roots=trust)
    mail = email(ctx, m["email"]) if "email" in m else None
    return spec.NOTIFY.build(ctx, m, Notify, webhook=hook, email=mail)


def email(ctx: Checker, v: Value) -> Email | None:
    s = spec.EMAIL
    m = s.read(ctx, v)
    host = s.get(ctx, m, "host")
    sender = s.get(ctx, m, "from")
    to = s.get(ctx, m, "to", [])
    password = s.get(ctx, m, "password_file")
    if host is None or sender is None or not to:
        return None
    return Email(
        host=host,
        port=s.get(ctx, m, "port"),
        sender=sender.removeprefix("mailto:"),
        recipients=tuple(t.removeprefix("mailto:") for t in to),
        starttls=s.get(ctx, m, "starttls"),
        username=s.get(ctx, m, "username"),
        password=password,
        timeout=s.get(ctx, m, "timeout"),
        trust_roots=roots(ctx, s, m, v),
    )


def heartbeat(ctx: Checker, v: Value) -> Heartbeat | None:
    s = spec.HEARTBEAT
    m = s.read(ctx, v)
    url = s.get(ctx, m, "url")
    if url is None:
        return None
    return s.build(ctx, m, Heartbeat, url=url, trust_roots=roots(ctx, s, m, v))


def monitor(ctx: Checker, v: Value) -> Monitor:
    s = spec.MONITOR
    m = s.read(ctx, v)
    endpoints: list[MonitorEndpoint] = []
    if "endpoints" in m:
        if isinstance(m["endpoints"].value, list):
            seen: set[str] = set()
            for item in m["endpoints"].value:
                ep = monitor_endpoint(ctx, item)
                if ep is not None and ep.name in seen:
                    ctx.error(item, f"another endpoint is already named {ep.name!r}")
                elif ep is not None:
                    seen.add(ep.name)
                    endpoints.append(ep)
        else:
            ctx.error(m["endpoints"], f"expected a list, got {kind_of(m['endpoints'].value)}")
    return Monitor(
        warning_days=s.get(ctx, m, "warning_days"),
        critical_days=s.get(ctx, m, "critical_days"),
        warning_share=s.get(ctx, m, "warning_share"),
        critical_share=s.get(ctx, m, "critical_share"),
        timeout=s.get(ctx, m, "timeout"),
        max_renew_age=s.get(ctx, m, "max_renew_age"),
        trust_roots=roots(ctx, s, m, v),
        endpoints=tuple(endpoints),
    )


def monitor_endpoint(ctx: Checker, v: Value) -> MonitorEndpoint | None:
    s = spec.MONITOR_ENDPOINT
    m = s.read(ctx, v)
    parsed = s.get(ctx, m, "address")
    if parsed is None:
        return None
    host, port = parsed
    return MonitorEndpoint(
        name=s.get(ctx, m, "name", m["address"].value),
        endpoint=Endpoint(host, port, s.get(ctx, m, "sni", host)),
        starttls=s.get(ctx, m, "starttls"),
        warning_days=s.get(ctx, m, "warning_days"),
        critical_days=s.get(ctx, m, "critical_days"),
        trust_roots=roots(ctx, s, m, v),
    )
