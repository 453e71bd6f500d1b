"""Execution module `certagent`: renew, plan and status through certagent's Python API.

    salt-call certagent.renew            # everything that is due
    salt-call certagent.renew www force=True
    salt-call certagent.plan
    salt-call certagent.status www
    salt-call certagent.check

`config` (every function) is the configuration file; default: $CERTAGENT_CONFIG, then
/etc/certagent/certagent.yaml. Errors come back as {"error": ..., "exit_status": N}.
A non-zero exit status is also Salt's `retcode`, so `salt-call` exits with it.
"""

from __future__ import annotations

from typing import Any

from certagent import api
from certagent.errors import CertagentError

__virtualname__ = "certagent"


def __virtual__() -> str:
    return __virtualname__


def _names(name: str | None) -> list[str]:
    return [] if name in (None, "", "all", "*") else [str(name)]


def _error(exc: CertagentError) -> dict[str, Any]:
    _retcode(int(exc.exit_status))
    return {"error": str(exc), "exit_status": int(exc.exit_status)}


def _retcode(status: int) -> None:
    """Salt's way for an execution module to fail `salt-call` (and `salt`) with a code."""
    if status:
        __context__["retcode"] = status  # type: ignore[name-defined]  # noqa: F821 - Salt's


def renew(
    name: str | None = None,
    force: bool = False,
    config: str | None = None,
    new_order: bool = False,
) -> dict[str, Any]:
    """Renew what is due (or NAME; with force=True even if not due; a certificate issued
    and not deployed yet is deployed instead of ordering, unless new_order=True). The
    report as data."""
    try:
        cfg = api.load_config(config)
        report = api.renew(cfg, _names(name), bool(force), new_order=bool(new_order))
    except CertagentError as exc:
        return _error(exc)
    status = int(api.exit_status(report))
    _retcode(status)
    return {**report.to_json(), "exit_status": status}


def plan(name: str | None = None, force: bool = False, config: str | None = None) -> dict[str, Any]:
    """What renew would do now, and why. Changes nothing."""
    try:
        cfg = api.load_config(config)
        report = api.plan_run(cfg, _names(name), bool(force))
    except CertagentError as exc:
        return _error(exc)
    return report.to_json()


def status(name: str | None = None, config: str | None = None) -> dict[str, Any]:
    """Certificates, expiry, next renewal, last outcome."""
    try:
        cfg = api.load_config(config)
        rows = api.status(cfg, _names(name))
    except CertagentError as exc:
        return _error(exc)
    return {"schema": 1, "certificates": [r.to_json() for r in rows]}


def check(name: str | None = None, config: str | None = None) -> dict[str, Any]:
    """Probe every endpoint, as `certagent check --json`."""
    try:
        cfg = api.load_config(config)
        report = api.check(cfg, _names(name))
    except CertagentError as exc:
        _retcode(3)
        return {"error": str(exc), "state": "UNKNOWN", "exit_status": 3}
    _retcode(int(report.state))
    return report.to_json()
