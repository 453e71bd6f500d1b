"""The thundering herd, by simulation (issue #18): certificates issued in the same hour,
renewed by certagent's real planner (`plan.decide`: renewal time, jitter, backoff,
Retry-After), each node running on its own schedule with no coordination, and the
orders per minute the CA would see. Also a 6-hour CA outage at the peak of the wave.

The limit it is held against is Let's Encrypt's published per-account limit, "New
Orders per Account: 300 every 3 hours, refilling 1 every 36 seconds"
(https://letsencrypt.org/docs/rate-limits/); renewals inside an ARI window are exempt
there, so this is the strict case of a CA without ARI.

Usage: bench/herd.py [CERTS] [NODES]   (default 100000 and 1000)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from certagent import plan
from certagent.model import (
    CertSpec,
    CertState,
    Http01Webroot,
    KeyType,
    Policy,
    Release,
)

T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
LIFETIME = dt.timedelta(days=90)
DAY, HOUR, MINUTE = dt.timedelta(days=1), dt.timedelta(hours=1), dt.timedelta(minutes=1)
LIMIT_3H = 300  # Let's Encrypt: new orders per account per 3 hours
ORDER_SECONDS = 0.5  # one order's duration; a run orders one after another (concurrency 1)


def stable(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


@dataclass
class Schedule:
    """When a node runs `certagent renew`."""

    name: str

    def runs(self, node: int, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        raise NotImplementedError


class SystemdTimer(Schedule):
    """contrib/systemd/certagent.timer: 00:00 and 12:00, RandomizedDelaySec=12h with
    FixedRandomDelay (a stable offset per host)."""

    def __init__(self, spread: dt.timedelta = 12 * HOUR) -> None:
        self.name, self.spread = f"systemd timer (12 h spread of {spread})", spread

    def runs(self, node: int, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        offset = self.spread * stable(f"timer{node}")
        t = start.replace(hour=0, minute=0, second=0) + offset
        out = []
        while t < end:
            if t >= start:
                out.append(t)
            t += 12 * HOUR
        return out


class Cron(Schedule):
    """contrib/cron.d/certagent: 03:17 and 15:17, `renew --splay S` (a new random
    delay each run)."""

    def __init__(self, splay: dt.timedelta) -> None:
        self.name, self.splay = f"cron 03:17/15:17, --splay {splay}", splay

    def runs(self, node: int, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        out, day = [], start.replace(hour=0, minute=0, second=0)
        i = 0
        while day < end:
            for hour in (3, 15):
                t = day + dt.timedelta(hours=hour, minutes=17)
                t += self.splay * stable(f"splay{node}-{i}")
                i += 1
                if start <= t < end:
                    out.append(t)
            day += DAY
        return out


@dataclass
class Cert:
    spec: CertSpec
    node: int
    current: Release
    state: CertState


def release(name: str, serial: int, start: dt.datetime) -> Release:
    fp = hashlib.sha256(f"{name}/{serial}".encode()).hexdigest()
    return Release(name, f"r{serial}", Path("/nonexistent"), (f"{name}.test",), KeyType.EC_P256,
                   start, start + LIFETIME, fp, "CN=sim")  # fmt: skip


def simulate(
    certs: int,
    nodes: int,
    schedule: Schedule,
    policy: Policy,
    outage: tuple[dt.datetime, dt.datetime] | None = None,
    budget: int | None = LIMIT_3H,
) -> dict[str, object]:
    """Every order until the first wave of renewals is done: orders per minute (all
    nodes: what the CA sees) and per node in any 3 hours (one account each)."""
    fleet = []
    for i in range(certs):
        name = f"c{i}"
        issued = T0 + HOUR * stable(f"issued{i}")  # all issued in the same hour
        spec = CertSpec(name, (f"{name}.test",), KeyType.EC_P256, Http01Webroot(Path("/")))
        fleet.append(Cert(spec, i % nodes, release(name, 0, issued), CertState()))
    end = T0 + LIFETIME
    runs = {n: schedule.runs(n, T0, end) for n in range(nodes)}
    # the next time worth asking each certificate: the planner's own renew_at (renewal
    # time or backoff end); per node a heap of them, so a run touches only what is due
    due: dict[int, list[tuple[dt.datetime, int]]] = {}
    for i, c in enumerate(fleet):
        when = plan.decide(c.spec, c.current, c.state, policy, T0).renew_at or T0
        due.setdefault(c.node, []).append((when, i))
    for h in due.values():
        heapq.heapify(h)
    heap = [(t, n) for n, ts in runs.items() for t in ts]
    heapq.heapify(heap)
    per_minute: Counter[dt.datetime] = Counter()
    per_node_orders: dict[int, list[dt.datetime]] = {}
    failed = renewed = deferred = 0
    while heap:
        now, node = heapq.heappop(heap)
        clock = now
        down_this_run = False
        mine = due.get(node, [])
        later: list[tuple[dt.datetime, int]] = []
        while mine and mine[0][0] <= now:
            _, i = heapq.heappop(mine)
            c = fleet[i]
            decision = plan.decide(c.spec, c.current, c.state, policy, now)
            if not decision.due:
                later.append((decision.renew_at or now + 12 * HOUR, i))
                continue
            sent = per_node_orders.get(node, [])
            recent = sum(1 for t in sent[-(budget or 1) :] if t > clock - 3 * HOUR)
            if budget is not None and recent >= budget:
                deferred += 1  # ca.max_new_orders: a later run orders it
                later.append((now + MINUTE, i))
                continue
            in_outage = outage is not None and outage[0] <= clock < outage[1]
            if not down_this_run:  # an order reaches the CA (after an outage: none more)
                per_minute[clock.replace(second=0, microsecond=0)] += 1
                per_node_orders.setdefault(node, []).append(clock)
                clock += dt.timedelta(seconds=ORDER_SECONDS)
            if in_outage or down_this_run:
                down_this_run = True  # the adapter stops ordering for the rest of the run
                failed += 1
                c.state = replace(
                    c.state,
                    consecutive_failures=c.state.consecutive_failures + 1,
                    last_attempt=now,
                    last_outcome="failed",
                )
                again = plan.decide(c.spec, c.current, c.state, policy, now).renew_at
                later.append((again or now + HOUR, i))
                continue
            renewed += 1  # renewed once: the wave under study is over for it
            c.current = release(c.spec.name, 1, clock)
            c.state = CertState(last_success=clock)
        for item in later:
            heapq.heappush(mine, item)
    peak_minute, peak = max(per_minute.items(), key=lambda kv: kv[1]) if per_minute else (T0, 0)
    worst_3h = 0
    for times in per_node_orders.values():
        times.sort()
        j = 0
        for i, t in enumerate(times):
            while times[j] <= t - 3 * HOUR:
                j += 1
            worst_3h = max(worst_3h, i - j + 1)
    return {
        "peak_per_minute": peak,
        "peak_at": peak_minute,
        "orders": sum(per_minute.values()),
        "renewed": renewed,
        "failed_attempts": failed,
        "worst_account_3h": worst_3h,
        "deferred": deferred,
        "last_renewal": max(per_minute) if per_minute else T0,
    }


def main() -> int:
    certs = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    nodes = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    d = Policy()
    print(
        f"Certificates issued in the same hour, 90-day lifetime, default policy (jitter "
        f"{d.jitter}, failure_backoff {d.failure_backoff:g} s doubling to {d.max_backoff:g} s); "
        f"Let's Encrypt allows {LIMIT_3H} new orders per account per 3 h"
    )
    big = max(certs // 10, 1)
    scenarios = [
        ("fleet, defaults", certs, nodes, SystemdTimer(), LIMIT_3H),
        ("fleet, the cron file instead", certs, nodes, Cron(HOUR), LIMIT_3H),
        ("one big node, no order budget (before)", big, 1, SystemdTimer(), None),
        ("one big node, defaults (max_new_orders 300 / 3 h)", big, 1, SystemdTimer(), LIMIT_3H),
    ]
    rows = []
    for label, n, k, schedule, budget in scenarios:
        r = simulate(n, k, schedule, d, budget=budget)
        rows.append((f"{label}: {n} certs, {k} node(s)", schedule.name, r))
        wave = r["peak_at"]
        assert isinstance(wave, dt.datetime)
        o = simulate(n, k, schedule, d, (wave - 3 * HOUR, wave + 3 * HOUR), budget=budget)
        rows.append((f"{label}, 6 h CA outage at the peak", schedule.name, o))
        print(f"  {label}: done", flush=True)
    print(
        "\n| scenario | schedule | peak orders/min at the CA | worst account, any 3 h "
        f"(limit {LIMIT_3H}) | orders | failed attempts | deferred | last renewal |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    for label, sched, r in rows:
        last = r["last_renewal"]
        assert isinstance(last, dt.datetime)
        print(
            f"| {label} | {sched} | {r['peak_per_minute']} | {r['worst_account_3h']} | "
            f"{r['orders']} | {r['failed_attempts']} | {r['deferred']} | "
            f"day {(last - T0) / DAY:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
