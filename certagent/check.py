"""`certagent check`: what every endpoint really serves, judged like a monitoring plugin.

Targets come from the configuration itself (every certificate's endpoints, so the
monitor can never cover only a subset) plus `monitor.endpoints` for services we do not
issue for, with STARTTLS where needed. Probes run concurrently, each with its own
timeout. Verification is never switched off: an untrusted, expired or mismatching
certificate is a finding. Only after a verified handshake has failed is the
certificate read a second time without verification, to say *what* is wrong (expiry
date, issuer, names); that read never changes the verdict.

Side effects: network (TCP, STARTTLS openings, TLS handshakes); reads the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from . import crypto, starttls
from .errors import PluginStatus
from .model import Endpoint, iso
from .verify import trust_context

# OpenSSL X509_V_ERR_* codes worth naming in words
_EXPIRED = 10
_NOT_YET_VALID = 9
_SELF_SIGNED = (18, 19)
_UNTRUSTED = (2, 20, 21)
_HOSTNAME = 62


State = PluginStatus  # monitoring-plugin states; the value is the exit code


# Worst first when several findings are combined: CRITICAL beats UNKNOWN beats WARNING.
_RANK = {State.OK: 0, State.WARNING: 1, State.UNKNOWN: 2, State.CRITICAL: 3}


def worst(states: Sequence[State]) -> State:
    return max(states, key=lambda s: _RANK[s], default=State.OK)


@dataclass(frozen=True)
class Target:
    label: str
    endpoint: Endpoint
    warning_days: float
    critical_days: float
    trust_roots: tuple[Path, ...] = ()
    starttls: str | None = None
    certificate: str | None = None  # the configured certificate it serves, if ours
    expected: str | None = None  # SHA-256 of our current release, if we have one
    damaged: str | None = None  # why the live release on disk cannot be used, if it cannot
    undeployed: str | None = None  # a certificate issued for it that is not live, and why
    fallback: str | None = None  # the live release came from a fallback CA, and why
    warning_share: float = 1 / 3  # ... or this share of the certificate's lifetime left
    critical_share: float = 1 / 6


@dataclass(frozen=True)
class Finding:
    target: Target
    state: State
    message: str
    seconds: float = 0.0
    fingerprint: str | None = None
    not_after: dt.datetime | None = None
    days_left: float | None = None
    issuer: str | None = None
    names: tuple[str, ...] = ()
    trusted: bool | None = None  # chain verified against system store + configured roots
    hostname_ok: bool | None = None
    current: bool | None = None  # serves our current release (None: not ours, or no release)

    def to_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "label": t.label,
            "host": t.endpoint.host,
            "port": t.endpoint.port,
            "sni": t.endpoint.sni,
            "starttls": t.starttls,
            "certificate": t.certificate,
            "state": self.state.name,
            "message": self.message,
            "seconds": round(self.seconds, 4),
            "fingerprint_sha256": self.fingerprint,
            "not_after": iso(self.not_after),
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "issuer": self.issuer,
            "names": list(self.names),
            "trusted": self.trusted,
            "hostname_ok": self.hostname_ok,
            "current_release": self.current,
            "warning_days": t.warning_days,
            "critical_days": t.critical_days,
        }


class _Failed(Exception):
    """Could not get as far as a certificate: refused, timeout, STARTTLS refused."""


@dataclass
class Checker:
    """Probes targets concurrently; contexts are built once per set of extra roots."""

    timeout: float
    now: dt.datetime
    workers: int = 64
    _contexts: dict[tuple[Path, ...], ssl.SSLContext] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_all(self, targets: Sequence[Target]) -> list[Finding]:
        if not targets:
            return []
        with ThreadPoolExecutor(max_workers=min(self.workers, len(targets))) as pool:
            return list(pool.map(self.inspect, targets))

    def inspect(self, target: Target) -> Finding:
        start = time.monotonic()
        try:
            finding = self._inspect(target)
        except _Failed as exc:
            finding = Finding(target, State.CRITICAL, str(exc))
        except Exception as exc:  # a bug or a surprise in one probe must not hide the others
            finding = Finding(target, State.UNKNOWN, f"check failed: {type(exc).__name__}: {exc}")
        return _with_seconds(finding, time.monotonic() - start)

    # -- one endpoint ----------------------------------------------------------------

    def _inspect(self, target: Target) -> Finding:
        ctx = self._context(target.trust_roots)
        try:
            der = self._handshake(target, ctx)
        except ssl.SSLCertVerificationError as exc:
            return self._rejected(target, exc)
        cert = x509.load_der_x509_certificate(der)
        return self._judge(target, cert, hashlib.sha256(der).hexdigest())

    def _rejected(self, target: Target, exc: ssl.SSLCertVerificationError) -> Finding:
        """The verified handshake failed: read the certificate once more, without trusting
        it, only to describe the problem. The verdict is CRITICAL whatever it says."""
        code, why = exc.verify_code, exc.verify_message
        try:
            der = self._handshake(target, _observer_context())
            cert: x509.Certificate | None = x509.load_der_x509_certificate(der)
        except (_Failed, ssl.SSLError, ValueError):
            der, cert = b"", None
        facts = crypto.facts_of(cert) if cert is not None else None
        sni = target.endpoint.sni
        if code == _EXPIRED and facts is not None:
            ago = (self.now - facts.not_after).total_seconds() / 86400
            message = (
                f"certificate expired {facts.not_after:%Y-%m-%d %H:%M} UTC ({ago:.1f} days ago)"
            )
        elif code == _NOT_YET_VALID and facts is not None:
            message = f"certificate not valid before {facts.not_before:%Y-%m-%d %H:%M} UTC"
        elif code == _HOSTNAME:
            names = ", ".join(facts.names) if facts and facts.names else "no DNS names"
            message = f"certificate is not valid for {sni} (it names {names})"
        elif code in _SELF_SIGNED:
            message = f"untrusted: {why} (add its root under trust_roots if it is yours)"
        elif code in _UNTRUSTED:
            message = f"untrusted chain: {why} (add the issuing root under trust_roots)"
        else:
            message = f"certificate not accepted: {why}"
        return Finding(
            target,
            State.CRITICAL,
            message,
            fingerprint=hashlib.sha256(der).hexdigest() if der else None,
            not_after=facts.not_after if facts else None,
            days_left=_days(facts.not_after, self.now) if facts else None,
            issuer=facts.issuer if facts else None,
            names=facts.names if facts else (),
            trusted=code == _HOSTNAME,  # a name mismatch is reported after the chain verified
            hostname_ok=code != _HOSTNAME,
        )

    def _judge(self, target: Target, cert: x509.Certificate, fingerprint: str) -> Finding:
        facts = crypto.facts_of(cert)
        days = _days(facts.not_after, self.now)
        states = [State.OK]
        notes = []
        life = (facts.not_after - facts.not_before).total_seconds() / 86400
        critical = _threshold(target.critical_days, target.critical_share, life)
        warning = _threshold(target.warning_days, target.warning_share, life)
        if days <= critical[0]:
            states.append(State.CRITICAL)
            notes.append(f"expires in {_left(days)} (critical at {critical[1]})")
        elif days <= warning[0]:
            states.append(State.WARNING)
            notes.append(f"expires in {_left(days)} (warning at {warning[1]})")
        current = None
        if target.expected is not None:
            current = fingerprint == target.expected
            if not current:
                states.append(State.WARNING)
                notes.append(
                    f"serves {fingerprint[:16]}…, not the current release {target.expected[:16]}… "
                    "(a deploy that did not take effect?)"
                )
        if target.damaged is not None:
            states.append(State.CRITICAL)  # the next restart of the web server fails
            notes.append(f"the live release on disk is damaged: {target.damaged}")
        if target.undeployed is not None:  # a failure a human must look at: not OK
            states.append(State.WARNING)
            notes.append(target.undeployed)
        if not notes:
            notes.append(f"valid for {days:.1f} more days")
            if current:
                notes.append("serves the current release")
        notes.append(f"issuer {facts.issuer}")
        if target.fallback is not None and current:
            notes.append(target.fallback)
        return Finding(
            target,
            worst(states),
            "; ".join(notes),
            fingerprint=fingerprint,
            not_after=facts.not_after,
            days_left=days,
            issuer=facts.issuer,
            names=facts.names,
            trusted=True,
            hostname_ok=True,
            current=current,
        )

    # -- plumbing --------------------------------------------------------------------

    def _context(self, roots: tuple[Path, ...]) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(roots)
            if ctx is None:
                ctx = self._contexts[roots] = trust_context(roots)
            return ctx

    def _handshake(self, target: Target, ctx: ssl.SSLContext) -> bytes:
        ep = target.endpoint
        deadline = time.monotonic() + self.timeout
        try:
            sock = socket.create_connection((ep.host, ep.port), timeout=self.timeout)
        except TimeoutError as exc:
            raise _Failed(f"no connection within {self.timeout:g} s") from exc
        except OSError as exc:
            raise _Failed(_oserror(exc)) from exc
        with sock:
            try:
                if target.starttls is not None:
                    starttls.PROTOCOLS[target.starttls](sock)
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                with ctx.wrap_socket(sock, server_hostname=ep.sni) as tls:
                    der = tls.getpeercert(binary_form=True)
            except ssl.SSLCertVerificationError:
                raise
            except ssl.SSLError as exc:
                raise _Failed(f"TLS handshake failed: {exc.reason or exc}") from exc
            except starttls.StartTlsRefused as exc:
                raise _Failed(f"{target.starttls} STARTTLS: {exc}") from exc
            except TimeoutError as exc:
                what = f"{target.starttls} opening or TLS" if target.starttls else "TLS"
                raise _Failed(f"no {what} answer within {self.timeout:g} s") from exc
            except OSError as exc:
                raise _Failed(_oserror(exc)) from exc
        if not der:
            raise _Failed("no certificate presented")
        return der


def _observer_context() -> ssl.SSLContext:
    """For describing a certificate that already failed verification; never for a verdict."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # read-only description after a failed verification
    return ctx


def _oserror(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    return exc.strerror or str(exc)


def _threshold(days: float, share: float, life: float) -> tuple[float, str]:
    """Days left at which a state begins: the configured days, or the share of this
    certificate's own lifetime if that is fewer (a 6-day certificate is not WARNING for
    its whole life at 14 days), and how to say it."""
    if life > 0 and share * life < days:
        return share * life, f"{_left(share * life)} left, {share:.0%} of its {_left(life)} life"
    return days, f"{days:g} days"


def _left(days: float) -> str:
    """A span in the unit that reads best: days, else hours, else minutes."""
    if days >= 2:
        return f"{days:.1f} days"
    if days * 24 >= 2:
        return f"{days * 24:.1f} hours"
    return f"{days * 1440:.0f} minutes"


def _days(not_after: dt.datetime, now: dt.datetime) -> float:
    return (not_after - now).total_seconds() / 86400


def _with_seconds(finding: Finding, seconds: float) -> Finding:
    return replace(finding, seconds=seconds)


# -- watch the watcher -----------------------------------------------------------------


@dataclass(frozen=True)
class Watcher:
    """How long ago the last completed `renew` run finished (from the history)."""

    state: State
    message: str
    last_run: dt.datetime | None
    age_seconds: float | None
    max_age: float

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.name,
            "message": self.message,
            "last_renew": iso(self.last_run),
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds),
            "max_age_seconds": self.max_age,
        }


def watch(last_run: dt.datetime | None, max_age: float, now: dt.datetime) -> Watcher:
    if last_run is None:
        return Watcher(
            State.CRITICAL,
            "no completed renew run in the history (is the timer or cron job installed?)",
            None,
            None,
            max_age,
        )
    age = (now - last_run).total_seconds()
    hours = age / 3600
    if age > max_age:
        return Watcher(
            State.CRITICAL,
            f"the last completed renew run was {hours:.1f} h ago (limit {max_age / 3600:g} h): "
            "is cron or the systemd timer still running?",
            last_run,
            age,
            max_age,
        )
    return Watcher(State.OK, f"last renew run {hours:.1f} h ago", last_run, age, max_age)


# -- the plugin output -------------------------------------------------------------------


def plugin_output(findings: Sequence[Finding], watcher: Watcher | None) -> tuple[State, str]:
    """Nagios/Icinga plugin text: a one-line summary with perfdata, then one line each."""
    states = [f.state for f in findings] + ([watcher.state] if watcher else [])
    overall = worst(states)
    counts = {s: sum(1 for f in findings if f.state is s) for s in State}
    parts = [f"{len(findings)} endpoint(s)"]
    parts += [
        f"{counts[s]} {s.name.lower()}" for s in (State.CRITICAL, State.UNKNOWN, State.WARNING)
    ]
    parts = [parts[0]] + [p for p in parts[1:] if not p.startswith("0 ")]
    bad = sorted((f for f in findings if f.state is not State.OK), key=lambda f: -_RANK[f.state])
    summary = ", ".join(parts)
    if watcher is not None and watcher.state is not State.OK:
        summary += f"; renew: {watcher.message}"
    if bad:
        summary += "; " + "; ".join(f"{f.target.label}: {f.message}" for f in bad[:3])
        if len(bad) > 3:
            summary += f"; and {len(bad) - 3} more"
    perf = []
    for f in findings:
        if f.days_left is not None:
            t = f.target
            label = f.target.label.replace("'", "''")  # the plugin guidelines' escape
            perf.append(f"'{label}'={f.days_left:.2f};{t.warning_days:g}:;{t.critical_days:g}:;;")
    if watcher is not None and watcher.age_seconds is not None:
        perf.append(f"'renew_age'={watcher.age_seconds:.0f}s;;{watcher.max_age:g};0;")
    lines = [f"CERTAGENT {overall.name} - {summary}" + (f" | {' '.join(perf)}" if perf else "")]
    if watcher is not None:
        lines.append(f"[{watcher.state.name}] renew: {watcher.message}")
    for f in findings:
        ep = f.target.endpoint
        via = f" via {f.target.starttls} STARTTLS" if f.target.starttls else ""
        where = f"{ep.host}:{ep.port}, SNI {ep.sni}{via}"
        lines.append(f"[{f.state.name}] {f.target.label} ({where}): {f.message}")
    return overall, "\n".join(lines)
