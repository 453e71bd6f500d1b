"""Runner `certagent` (on the Salt master): a fleet rolled out canary first, then in
batches, stopping at the first failure; and the fleet's status in one table.

    salt-run certagent.rollout tgt='web*' batch=2 pause=30
    salt-run certagent.rollout tgt='*' canary=web1 force=True
    salt-run certagent.fleet_status tgt='*'              # a table; --out=json for data

`rollout` runs `certagent.renew` (the execution module) on one canary minion, checks
its report, then on the rest in batches of `batch` (a pause of `pause` seconds
between), and stops at the first minion that failed, rolled back or broke: every minion
after it is left untouched, and says so. A minion that does not answer is reported and
never counts as a success. keepalived pairs are rolled out as pairs: the members share
the grain `certagent_pair` (a name) and say their role in the grain `certagent_role`
(`backup` or `master`; keepalived's notify script can keep it current with
`salt-call grains.setval certagent_role ...`); the BACKUP goes in one batch and its
MASTER in a later one, never both in the same batch.

The runner's return code (salt-run's exit status) is 0 only when every targeted minion
was reached and renewed or had nothing due. Side effects: through Salt's LocalClient.
"""

from __future__ import annotations

import time
from typing import Any

from certagent.model import MONITOR_LEVEL

__virtualname__ = "certagent"
OK = 0  # certagent's exit status for renewed or nothing due


def __virtual__() -> str:
    return __virtualname__


def _client() -> Any:
    import salt.client

    return salt.client.get_local_client(__opts__["conf_file"])  # type: ignore[name-defined]  # noqa: F821


def _expected(tgt: str, tgt_type: str) -> list[str]:
    """The accepted minions the target names, answering or not."""
    import salt.utils.minions

    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)  # type: ignore[name-defined]  # noqa: F821
    return sorted(found["minions"])


def _retcode(code: int) -> int:
    """The runner's exit status: salt-run exits with the `retcode` of the returned
    dict (and jobs record it from the context)."""
    __context__["retcode"] = code  # type: ignore[name-defined]  # noqa: F821
    return code


def _verdict(ret: Any) -> tuple[int, str]:
    """certagent's exit status for one minion's answer, and a word on it."""
    if not isinstance(ret, dict):
        return 3, f"unexpected answer: {str(ret)[:200]}"
    data = ret.get("ret")
    if not isinstance(data, dict):
        return 3, f"no certagent report: {str(data)[:200]}"
    status = data.get("exit_status")
    if not isinstance(status, int):
        return 3, str(data.get("error", "no exit status"))[:300]
    certs = data.get("certificates") or []
    words = [f"{c.get('name')}: {c.get('outcome')}" + (f" ({c['error']})" if c.get("error")
             else "") for c in certs if isinstance(c, dict)]  # fmt: skip
    return status, data.get("error") or ", ".join(words) or "nothing configured"


def _answered(ret: Any) -> bool:
    """A return that is the minion's own (not Salt's "Minion did not return")."""
    if not isinstance(ret, dict):
        return False
    data = ret.get("ret")
    return not (isinstance(data, str) and data.startswith("Minion did not return"))


def _units(minions: list[str], grains: dict[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """Single minions, and pairs (BACKUP first) from the certagent_pair/role grains."""
    pairs: dict[str, list[str]] = {}
    singles = []
    for m in minions:
        g = grains.get(m) if isinstance(grains.get(m), dict) else {}
        pair = g.get("certagent_pair") if g else None
        if pair:
            pairs.setdefault(str(pair), []).append(m)
        else:
            singles.append(m)
    for name, members in pairs.items():
        role = {m: str((grains.get(m) or {}).get("certagent_role") or "").lower() for m in members}
        members.sort(key=lambda m: (role[m] != "backup", m))  # BACKUP first, then by id
        if len(members) != 2 or role[members[0]] != "backup":
            raise ValueError(
                f"pair {name!r}: expected one minion with certagent_role backup and one "
                f"with master, found {role}"
            )
    return singles, pairs


def _batches(singles: list[str], pairs: dict[str, list[str]], size: int) -> list[list[str]]:
    """Batches of at most `size`: a pair's MASTER comes in a batch after its BACKUP's."""
    waiting = list(singles) + [members[0] for members in pairs.values()]
    masters = {members[0]: members[1] for members in pairs.values()}
    batches: list[list[str]] = []
    ready: list[str] = []  # masters whose backup is done
    while waiting or ready:
        batch = ready[:size]
        ready = ready[size:]
        while len(batch) < size and waiting:
            batch.append(waiting.pop(0))
        batches.append(batch)
        ready += [masters[m] for m in batch if m in masters]
    return batches


def rollout(
    tgt: str = "*",
    tgt_type: str = "glob",
    batch: int = 2,
    canary: str | None = None,
    pause: float = 0,
    name: str | None = None,
    force: bool = False,
    timeout: int = 600,
) -> dict[str, Any]:
    """Canary, then batches; stop at the first failure. See the module's description."""
    client = _client()
    expected = _expected(tgt, tgt_type)
    if not expected:
        return {
            "result": False,
            "retcode": _retcode(1),
            "comment": f"no accepted minion matches {tgt!r}",
        }
    grains = client.cmd(
        expected,
        "grains.item",
        ["certagent_pair", "certagent_role"],
        tgt_type="list",
        timeout=min(30, timeout),
    )
    # a minion that did not answer comes back as a string ("Minion did not return")
    reachable = [m for m in expected if isinstance(grains.get(m), dict)]
    unreachable = [m for m in expected if m not in reachable]
    try:
        singles, pairs = _units(reachable, grains)
    except ValueError as exc:
        return {
            "result": False,
            "retcode": _retcode(1),
            "comment": str(exc),
            "unreachable": unreachable,
        }
    if canary is not None and canary not in reachable:
        return {
            "result": False,
            "retcode": _retcode(1),
            "comment": f"canary {canary!r} is not a reachable target",
            "unreachable": unreachable,
        }
    first = canary or (singles[0] if singles else next(iter(pairs.values()))[0])
    if first in singles:
        singles.remove(first)
    else:  # a pair's BACKUP as canary: its MASTER comes in the first batch
        pair = next(p for p, members in pairs.items() if first in members)
        if pairs[pair][0] != first:
            return {
                "result": False,
                "retcode": _retcode(1),
                "unreachable": unreachable,
                "comment": f"canary {first!r} is a MASTER; its BACKUP goes first",
            }
        singles.insert(0, pairs.pop(pair)[1])
    plan = [[first], *_batches(singles, pairs, max(1, int(batch)))]
    kwarg: dict[str, Any] = {"force": bool(force)}
    if name:
        kwarg["name"] = name
    minions: dict[str, dict[str, Any]] = {}
    stopped_at = None
    for number, group in enumerate(plan):
        if number > 1 and pause:
            time.sleep(float(pause))  # the operator's pause between batches
        answers = client.cmd(
            group,
            "certagent.renew",
            kwarg=kwarg,
            tgt_type="list",
            full_return=True,
            timeout=timeout,
        )
        for m in group:
            if m not in answers:
                status, word = 3, "did not answer"
            else:
                status, word = _verdict(answers[m])
            minions[m] = {"batch": number, "exit_status": status, "summary": word}
            if status != OK and stopped_at is None:
                stopped_at = m
        if stopped_at is not None:
            break
    done = set(minions)
    untouched = [m for group in plan for m in group if m not in done]
    result = stopped_at is None and not unreachable
    code = _retcode(0 if result else 1)
    comment = (
        f"stopped at {stopped_at} (exit {minions[stopped_at]['exit_status']}): "
        f"{minions[stopped_at]['summary']}"
        if stopped_at
        else f"{len(minions)} minion(s) rolled out"
    )
    if unreachable:
        comment += f"; not reached: {', '.join(unreachable)}"
    return {
        "result": result,
        "retcode": code,
        "comment": comment,
        "canary": first,
        "batches": plan,
        "minions": minions,
        "untouched": untouched,
        "unreachable": unreachable,
        "stopped_at": stopped_at,
    }


_LEVELS = {outcome.value: level for outcome, level in MONITOR_LEVEL.items()}


def fleet_status(
    tgt: str = "*", tgt_type: str = "glob", output: str = "table", timeout: int = 60
) -> Any:
    """Every minion's certificates in one table (or `output=json`: the data), the
    minions that did not answer, and an exit status for a monitor: 0 all fine, 1 some
    certificate is due, 2 a minion did not answer, the target matched none, or a
    certificate's last run failed (before the swap: refused by a gate too), rolled back
    or broke (certagent's own outcomes, model.MONITOR_LEVEL), or it expired."""
    client = _client()
    expected = _expected(tgt, tgt_type)
    answers = (
        client.cmd(expected, "certagent.status", tgt_type="list", full_return=True, timeout=timeout)
        if expected
        else {}
    )
    rows, problems = [], []
    missing = [m for m in expected if not _answered(answers.get(m))]
    worst = 2 if missing else 0
    if not expected:  # a target that matches nothing is not "all well"
        problems.append(f"no minion matches {tgt!r} ({tgt_type})")
        worst = 2
    for m in sorted(m for m in answers if m not in missing):
        data = answers[m].get("ret") if isinstance(answers[m], dict) else None
        if not isinstance(data, dict) or "certificates" not in data:
            problems.append(f"{m}: {str((data or {}).get('error', data))[:200]}")
            worst = 2
            continue
        for c in data["certificates"]:
            outcome = c.get("last_outcome") or "-"
            days = c.get("days_left")
            rows.append(
                {
                    "minion": m,
                    "name": c.get("name"),
                    "not_after": c.get("not_after"),
                    "days_left": days,
                    "next_renewal": c.get("next_renewal"),
                    "last_outcome": outcome,
                    "due": c.get("due"),
                }
            )
            level = _LEVELS.get(outcome, 0)  # certagent's own outcomes (model.MONITOR_LEVEL)
            if level >= 2 or (days is not None and days <= 0):
                worst = 2
            elif c.get("due"):
                worst = max(worst, 1)
    _retcode(worst)
    data = {
        "retcode": worst,
        "schema": 1,
        "exit_status": worst,
        "certificates": rows,
        "missing": missing,
        "problems": problems,
    }
    if output == "json":
        return data
    lines = [f"{'MINION':16} {'NAME':16} {'NOT AFTER':17} {'DAYS':>6} {'NEXT RENEWAL':17} LAST"]
    for r in rows:
        days = f"{r['days_left']:.1f}" if isinstance(r["days_left"], int | float) else "-"
        lines.append(
            f"{r['minion']:16} {r['name']!s:16} {str(r['not_after'] or '-')[:16]:17} "
            f"{days:>6} {str(r['next_renewal'] or '-')[:16]:17} {r['last_outcome']}"
        )
    lines += [f"{m:16} did not answer" for m in missing] + problems
    lines.append(f"exit status {worst}")
    return {"table": "\n".join(lines), "retcode": worst}
