"""Account and certificate lifecycle: `revoke`, `account show|rollover|deactivate`.

Each acts on one thing named explicitly (a certificate, the account of the configured
CA), under the run lock, and returns data that the CLI prints as text or JSON and the
audit log keeps. A revoked certificate is recorded in its state, so the next `renew`
replaces it (with a new key, always, after a key compromise).

Side effects: network (the CA, through the ACME adapter), filesystem (state, account).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import layout
from .errors import UsageError
from .model import CertResult, Config, Decision, Outcome, Report
from .steps import Steps
from .store import Store
from .system import Clock, SystemClock

if TYPE_CHECKING:
    from .acme_issuer import AcmeIssuer

# RFC 5280 section 5.3.1 reason codes that a subscriber may give (RFC 8555 section 7.6)
REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


def revoke(
    config: Config,
    name: str,
    reason: str = "unspecified",
    *,
    clock: Clock | None = None,
    issuer: AcmeIssuer | None = None,
) -> Report:
    """Revoke the live certificate of `name` at the CA that issued it."""
    from . import api  # the composition root

    if reason not in REASONS:
        raise UsageError(f"unknown reason {reason!r} (one of {', '.join(REASONS)})")
    spec = api.select(config, [name])[0]
    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    started = clock.now()
    with store.lock():
        current = store.current(spec.name)
        if current is None:
            raise UsageError(f"certificate {name} has no live release to revoke")
        state = store.read_state(spec.name)
        if state.revoked is not None and state.revoked[0] == current.release_id:
            raise UsageError(f"release {current.release_id} of {name} is already revoked")
        steps = Steps(clock)
        acme = issuer or api.acme_issuer(config.ca, config, store, clock)
        with steps.step("revoke", f"release {current.release_id}, reason {reason}"):
            acme.revoke((current.path / layout.CERT).read_bytes(), REASONS[reason])
        store.write_state(
            spec.name,
            replace(state, revoked=(current.release_id, reason), last_outcome="revoked"),
        )
        decision = Decision(True, f"revocation of release {current.release_id} requested")
        result = CertResult(
            spec.name,
            Outcome.REVOKED,
            decision,
            tuple(steps.results),
            current.release_id,
            current.not_after,
        )
        report = Report("revoke", started, clock.now(), (result,))
        api.finish(config, store, report, clock)
    return report


@dataclass(frozen=True)
class AccountReport:
    action: str  # show, rollover, deactivate
    directory: str
    details: dict[str, object]
    at: dt.datetime

    def to_json(self) -> dict[str, object]:
        return {
            "schema": 1,
            "command": f"account {self.action}",
            "directory": self.directory,
            "time": self.at.isoformat(timespec="seconds"),
            **self.details,
        }


def account(
    config: Config,
    action: str,
    *,
    clock: Clock | None = None,
    issuer: AcmeIssuer | None = None,
) -> AccountReport:
    """`show` the account, `rollover` its key, or `deactivate` it (for good)."""
    from . import api

    clock = clock or SystemClock()
    store = Store(config.state_dir, config.state_group)
    with store.lock():
        acme = issuer or api.acme_issuer(config.ca, config, store, clock)
        if action == "show":
            details = acme.account()
            records = persist_records(config, details)
            if records:
                details["dns_persist_records"] = records
        elif action == "rollover":
            details = {"new_key_thumbprint": acme.rollover(), **acme.account()}
        elif action == "deactivate":
            details = {"deactivated": acme.deactivate()}
        else:
            raise UsageError(f"unknown account action {action!r} (show, rollover, deactivate)")
        report = AccountReport(action, config.ca.directory, details, clock.now())
        if action != "show":
            record = {
                "time": report.at.isoformat(timespec="seconds"),
                "command": f"account {action}",
                "exit_status": 0,
                "details": details,
                "certificates": [],
            }
            # the CA's change is done; the record is best effort on a full disk
            with contextlib.suppress(OSError):
                store.append_history(record)
    return report


def persist_records(config: Config, account: dict[str, object]) -> list[str]:
    """The `_validation-persist` TXT record each name validated by dns-persist-01 needs
    (draft-ietf-acme-dns-persist), for this account: publish each once. A name and its
    wildcard share one record, with `policy=wildcard`."""
    from . import persist
    from .model import Dns01Persist

    url = str(account.get("url") or "")
    caa = account.get("caa_identities")
    identities = [str(x) for x in caa] if isinstance(caa, list) else []
    wanted: dict[str, tuple[Dns01Persist, bool]] = {}  # record name -> (way, wildcard)
    for spec in config.certificates:
        for name in spec.names:
            way = spec.challenge_for(name)
            if isinstance(way, Dns01Persist):
                key = persist.record_name(name)
                wildcard = name.startswith("*.") or (key in wanted and wanted[key][1])
                wanted[key] = (way, wildcard)
    out = []
    for key, (way, wildcard) in wanted.items():
        issuer = way.issuer or (identities[0] if identities else None)
        if issuer is None:
            out.append(f"{key} TXT: the CA names no CAA identity in its directory; set "
                       "challenge.issuer to its issuer domain name")  # fmt: skip
        else:
            value = persist.record_value(issuer, url, wildcard, way.persist_until)
            out.append(f'{key} IN TXT "{value}"')
    return out
