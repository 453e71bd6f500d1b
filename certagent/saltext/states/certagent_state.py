"""State module `certagent`: `certagent.renewed` (all certificates, or one by name) and
`certagent.certificate` (one certificate, named by the state's ID).

    tls-certificates:
      certagent.renewed:
        - name: all              # or one certificate's name
        - config: /etc/certagent/certagent.yaml

    www:
      certagent.certificate:
        - config: /etc/certagent/certagent.yaml
        - watch: [file: /srv/salt/nginx/site.conf.j2]

test=True runs certagent's plan and predicts the changes without touching anything
(when the configuration does not exist yet, because an earlier state in the same run
writes it, the prediction is `None` with that said). `changes` lists only certificates
that really changed (a new release went live). A failure is `result: False` with the
report's own reason. `watch` (a template, pillar or web server change) re-deploys the
current release (fresh render, config test, hook, verify): a new certificate is
ordered only when what shapes it changed (names, key type) or it is due anyway; with
test=True a pending watch is `None` with each re-deploy in `changes`, as the real run
does it.
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
    testing = bool(__opts__["test"])  # type: ignore[name-defined]  # noqa: F821 - Salt's
    try:
        if testing and _missing(config):
            ret["result"] = None
            ret["comment"] = (
                f"the configuration {_missing(config)} does not exist yet (an earlier state "
                "may write it); certagent would plan and renew after it is written"
            )
            return ret
        cfg = api.load_config(config)
        names = _names(name)
        if testing:
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


def certificate(name: str, config: str | None = None, force: bool = False) -> dict[str, Any]:
    """One certificate, named by the state's ID: what `renewed` does for it."""
    if _names(name) == []:
        return {"name": name, "result": False, "changes": {},
                "comment": "certagent.certificate names one certificate; use "
                           "certagent.renewed for all"}  # fmt: skip
    return renewed(name, config=config, force=force)


def mod_watch(name: str, sfun: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """A watched requisite changed (a template, the pillar, the web server's config):
    deploy the current release again, so the change is rendered, tested, reloaded and
    verified; order only what is due (changed names or key type make it due). With
    test=True: `None`, each re-deploy predicted in `changes`."""
    if sfun not in ("renewed", "certificate"):
        return {"name": name, "result": False, "changes": {},
                "comment": f"certagent.{sfun} does not support watch"}  # fmt: skip
    config = kwargs.get("config")
    ret = renewed(name, config=config)
    if ret["result"] is False:
        return ret
    testing = bool(__opts__["test"])  # type: ignore[name-defined]  # noqa: F821 - Salt's
    lines = [ret["comment"]] if ret["comment"] else []
    try:
        cfg = api.load_config(config)
        for spec in api.select(cfg, _names(name)):
            if spec.name in ret["changes"] or spec.deploy is None:
                continue  # renewed (and so deployed), or nothing to deploy
            if testing:
                live = next((row.release for row in api.status(cfg, [spec.name])), None)
                if live is None:
                    continue  # nothing live: its renewal is predicted above
                ret["changes"][spec.name] = {"redeploy": live,
                                             "reason": "a watched state changed"}  # fmt: skip
                ret["result"] = None
                lines.append(f"{spec.name}: would deploy release {live} again")
                continue
            report = api.deploy(cfg, spec.name)
            r = report.results[0]
            if r.outcome is Outcome.RENEWED:
                ret["changes"][spec.name] = {"redeployed": r.release,
                                             "reason": "a watched state changed"}  # fmt: skip
                lines.append(f"{spec.name}: deployed release {r.release} again")
            else:
                ret["result"] = False
                lines.append(f"{spec.name}: re-deploy {r.outcome.value}: {r.error}")
    except CertagentError as exc:
        ret["result"] = False
        lines.append(str(exc))
    ret["comment"] = "\n".join(lines)
    return ret


def _missing(config: str | None) -> str | None:
    """The configuration's path if it does not exist (yet), else None."""
    import os

    from certagent import config as config_mod

    path = config_mod.default_path(config, dict(os.environ))
    return None if path.exists() else str(path)
