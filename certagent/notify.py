"""Notifications (webhook, e-mail) and the heartbeat ping.

A *problem* is a state of one certificate that people must hear about: the last
attempt failed, was refused by a gate, rolled back, or left things BROKEN; or the
live certificate expires within `notify.expiry_days`. Each channel remembers what it
has already delivered (`notify-state.json`): an unchanged, unresolved problem is not
sent again on every run; a changed one is, and so is its resolution. A delivery that
fails is retried on the next run, since it was not recorded as delivered.

Side effects: network (HTTP POST, SMTP), one state file under the state directory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .model import Config, Email, Heartbeat, Outcome, Report, Webhook, iso
from .store import Store, atomic_write
from .verify import trust_context

log = logging.getLogger(__name__)

STATE_FILE = "notify-state.json"
_SEVERITY = {"broken": "critical", "rolled_back": "critical", "failed": "warning",
             "refused": "warning", "expiring": "warning"}  # fmt: skip


@dataclass(frozen=True)
class Event:
    kind: str  # "problem" or "resolved"
    certificate: str
    problem: str  # failed, refused, rolled_back, broken, expiring
    message: str
    time: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "certificate": self.certificate,
            "problem": self.problem,
            "severity": "ok" if self.kind == "resolved" else _SEVERITY.get(self.problem, "warning"),
            "message": self.message,
            "host": socket.gethostname(),
            "time": iso(self.time),
        }

    @property
    def subject(self) -> str:
        word = "RESOLVED" if self.kind == "resolved" else "PROBLEM"
        return f"[certagent] {word} {self.certificate}: {self.problem} on {socket.gethostname()}"


class DeliveryFailed(Exception):
    pass


# -- what is wrong now ---------------------------------------------------------------


LIVE_REPORTS = ("renew", "deploy", "receive", "rollback")  # results name the live release


def expiring(config: Config, now: dt.datetime, report: Report | None = None) -> dict[str, str]:
    """certificate -> "expiring|message" for live certificates within notify.expiry_days.
    The live release's end is read from the run's report where it names it; the store
    is read only for the certificates the run did not (`renew NAME`, a failure)."""
    live: dict[str, dt.datetime | None] = {}
    if report is not None and report.command in LIVE_REPORTS:
        live = {r.name: r.not_after for r in report.results if r.not_after is not None}
    store = Store(config.state_dir)
    out = {}
    for spec in config.certificates:
        if spec.name in live:
            not_after = live[spec.name]
        else:
            current = store.snapshot(spec.name).current
            not_after = current.not_after if current is not None else None
        if not_after is None:
            continue
        days = (not_after - now).total_seconds() / 86400
        if days <= config.notify.expiry_days:
            when = f"{not_after:%Y-%m-%d %H:%M} UTC"
            out[spec.name] = f"expiring|the live certificate expires {when} ({days:.1f} days)"
    return out


def problems(
    config: Config,
    report: Report,
    previous: Mapping[str, Mapping[str, str]],
    expiry: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    """certificate -> {slot: problem|message}. Slots: "run" (the last attempt) and
    "expiry". A skipped certificate keeps its unresolved run problem."""
    results = {r.name: r for r in report.results}
    active: dict[str, dict[str, str]] = {}
    for spec in config.certificates:
        slots: dict[str, str] = {}
        result = results.get(spec.name)
        if result is None or result.outcome is Outcome.SKIPPED:
            if "run" in previous.get(spec.name, {}):
                slots["run"] = previous[spec.name]["run"]
        elif result.outcome not in (Outcome.RENEWED, Outcome.REVOKED):
            kind = {
                Outcome.FAILED_BEFORE_SWAP: "failed",
                Outcome.ROLLED_BACK: "rolled_back",
                Outcome.BROKEN: "broken",
            }[result.outcome]
            if result.outcome is Outcome.FAILED_BEFORE_SWAP and result.error_code in (
                "gate-refused",
                "rehearsal-failed",
            ):
                kind = "refused"
            slots["run"] = f"{kind}|{result.error or result.outcome.value}"
        if spec.name in expiry:
            slots["expiry"] = expiry[spec.name]
        if slots:
            active[spec.name] = slots
    return active


def events(
    before: Mapping[str, Mapping[str, str]],
    now_active: Mapping[str, Mapping[str, str]],
    at: dt.datetime,
) -> list[Event]:
    out = []
    for cert in sorted(set(before) | set(now_active)):
        old, new = before.get(cert, {}), now_active.get(cert, {})
        for slot in sorted(set(old) | set(new)):
            if slot in new and old.get(slot) != new[slot]:
                problem, _, message = new[slot].partition("|")
                if slot == "expiry" and slot in old:
                    continue  # the same expiry, a day closer: not news
                out.append(Event("problem", cert, problem, message, at))
            elif slot in old and slot not in new:
                problem, _, message = old[slot].partition("|")
                out.append(Event("resolved", cert, problem, f"resolved: {message}", at))
    return out


# -- channels ------------------------------------------------------------------------


def post_json(
    url: str,
    payload: Mapping[str, Any],
    timeout: float,
    roots: tuple[Path, ...],
) -> None:
    data = json.dumps(payload).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is validated as http(s) by config
        url, data=data, method="POST", headers={"Content-Type": "application/json",
                                               "User-Agent": "certagent"}
    )  # fmt: skip
    context = trust_context(roots) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
            resp.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"{url} answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"{url}: {reason}") from exc


def send_webhook(hook: Webhook, event: Event, sleep: Callable[[float], None]) -> None:
    delay = hook.backoff
    for attempt in range(1, hook.retries + 1):
        try:
            post_json(hook.url, event.to_json(), hook.timeout, hook.trust_roots)
            return
        except DeliveryFailed as exc:
            if attempt == hook.retries:
                raise DeliveryFailed(f"webhook: {exc} (after {attempt} attempts)") from exc
            log.info("webhook attempt %d failed (%s); again in %.1f s", attempt, exc, delay)
            sleep(delay)
            delay *= 2


def send_email(mail: Email, event: Event) -> None:
    msg = EmailMessage()
    msg["Subject"] = event.subject
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.recipients)
    msg.set_content(
        f"{event.message}\n\n" + json.dumps(event.to_json(), indent=2) + "\n\n-- certagent\n"
    )
    try:
        with smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout) as smtp:
            smtp.ehlo()
            if mail.starttls:
                smtp.starttls(context=trust_context(mail.trust_roots))  # verified, always
                smtp.ehlo()
            if mail.username and mail.password is not None:
                smtp.login(mail.username, mail.password)
            smtp.send_message(msg)
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise DeliveryFailed(f"e-mail via {mail.host}:{mail.port}: {exc}") from exc


# -- one run -------------------------------------------------------------------------


def notify(config: Config, report: Report, now: dt.datetime,
           sleep: Callable[[float], None]) -> list[str]:  # fmt: skip
    """Send what is new on each configured channel; returns delivery errors (logged too)."""
    channels: dict[str, Callable[[Event], None]] = {}
    if config.notify.webhook is not None:
        hook = config.notify.webhook
        channels["webhook"] = lambda e: send_webhook(hook, e, sleep)
    if config.notify.email is not None:
        mail = config.notify.email
        channels["email"] = lambda e: send_email(mail, e)
    if not channels:
        return []
    path = config.state_dir / STATE_FILE
    delivered = _read(path)
    original = json.dumps(delivered, sort_keys=True)
    expiry = expiring(config, now, report)  # once for all channels
    errors = []
    for name, send in channels.items():
        before = delivered.get(name, {})
        active = problems(config, report, before, expiry)
        done = {cert: dict(slots) for cert, slots in before.items()}
        for event in events(before, active, now):
            try:
                send(event)
            except DeliveryFailed as exc:
                log.warning("notification not delivered: %s", exc)
                errors.append(str(exc))
                continue  # not recorded: tried again next run
            slots = done.setdefault(event.certificate, {})
            slot = "expiry" if event.problem == "expiring" else "run"
            if event.kind == "problem":
                slots[slot] = active[event.certificate][slot]
            else:
                slots.pop(slot, None)
        # an expiry problem that is still active but unchanged keeps its first message
        delivered[name] = {cert: slots for cert, slots in done.items() if slots}
    if json.dumps(delivered, sort_keys=True) != original:  # most runs: nothing new, no write
        atomic_write(path, (json.dumps(delivered, indent=2, sort_keys=True) + "\n").encode(), 0o600)
    return errors


def ping(heartbeat: Heartbeat, report: Report, exit_status: int) -> str | None:
    """The dead man's switch: POST after a completed run. Returns an error, or None."""
    payload = {
        "command": report.command,
        "exit_status": exit_status,
        "finished": iso(report.finished),
        "host": socket.gethostname(),
    }
    try:
        post_json(heartbeat.url, payload, heartbeat.timeout, heartbeat.trust_roots)
    except DeliveryFailed as exc:
        log.warning("heartbeat not delivered: %s", exc)
        return str(exc)
    return None


def _read(path: Path) -> dict[str, dict[str, dict[str, str]]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("unreadable %s (%s): starting afresh", path, exc)
        return {}
    return raw if isinstance(raw, dict) else {}
