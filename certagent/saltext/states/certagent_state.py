"""State module `certagent`: `certagent.renewed`.

    tls-certificates:
      certagent.renewed:
        - name: all              # or one certificate's name
        - config: /etc/certagent/certagent.yaml

test=True runs certagent's plan and predicts the changes without touching anything.
`changes` lists only certificates that really changed (a new release went live). A
failure is `result: False` with the report's own reason. `watch` forces a renewal.
"""

from __future__ import annotations

from typing import Any

from certagent import api
from certagent.errors import CertagentError
from certagent.model import Outcome

__virtualname__ = "certagent"


def __virtual__() -> str:
    return __virtualname__


def _names(name: str) -> list[str]:
    return [] if name in ("", "all", "*") else [name]


def renewed(name: str, config: str | None = None, force: bool = False) -> dict[str, Any]:
    ret: dict[str, Any] = {"name": name, "result": True, "changes": {}, "comment": ""}
    try:
        cfg = api.load_config(config)
        names = _names(name)
        if __opts__["test"]:  # type: ignore[name-defined]  # noqa: F821 - injected by Salt
            report = api.plan_run(cfg, names, bool(force))
            due = [r for r in report.results if r.decision.due]
            for r in due:
                ret["changes"][r.name] = {"old": r.release, "new": "(a new release)",
                                          "reason": r.decision.reason}  # fmt: skip
            ret["result"] = None if due else True
            ret["comment"] = (
                f"would renew {', '.join(r.name for r in due)}" if due else "nothing is due"
            )
            return ret
        before = {row.name: row.release for row in api.status(cfg, names)}
        report = api.renew(cfg, names, bool(force))
    except CertagentError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    lines = []
    for r in report.results:
        if r.outcome is Outcome.RENEWED:
            ret["changes"][r.name] = {
                "old": before.get(r.name),
                "new": r.release,
                "not_after": r.not_after.isoformat() if r.not_after else None,
                "reason": r.decision.reason,
            }
            lines.append(f"{r.name}: renewed ({r.decision.reason})")
        elif r.outcome is Outcome.SKIPPED:
            lines.append(f"{r.name}: nothing to do ({r.decision.reason})")
        else:
            ret["result"] = False
            lines.append(f"{r.name}: {r.outcome.value}: {r.error}")
            if r.outcome is not Outcome.FAILED_BEFORE_SWAP and r.release:
                # a rollback also changed what is live: say so
                ret["changes"][r.name] = {"outcome": r.outcome.value, "live": r.release}
    ret["comment"] = "\n".join(lines)
    return ret


def mod_watch(name: str, sfun: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """A watched requisite changed (e.g. the web server's config): renew now."""
    if sfun == "renewed":
        return renewed(name, config=kwargs.get("config"), force=True)  # not Salt's __reqs__ etc.
    return {
        "name": name,
        "result": False,
        "changes": {},
        "comment": f"certagent.{sfun} does not support watch",
    }
