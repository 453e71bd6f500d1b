"""Authorizations (RFC 8555 section 7.5): for each one not already valid, its challenge
presented by the solver of its name (http-01, dns-01, tls-alpn-01; dns-persist-01's
standing record checked), all presented before
the CA is asked to validate any (dns-01 publishes an order's records at once and waits
for them), then each awaited honouring Retry-After; every challenge cleaned up, always.

Side effects: network (the CA), and what the solvers do (files, listeners, DNS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from acme import challenges, client, messages

from ..challenges import Solver, SolverFor
from ..errors import OrderFailed
from ..persist import KIND as PERSIST
from .account import thumbprint
from .problems import problem_text, retry_after_seconds
from .session import Session
from .transport import Raw

log = logging.getLogger(__name__)

POLL_DELAYS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # a local CA: at once


class Authorizations:
    def __init__(self, session: Session) -> None:
        self.s = session

    def authorize(
        self,
        acme: client.ClientV2,
        orderr: messages.OrderResource,
        solver_for: SolverFor,
        deadline: float,
    ) -> None:
        presented: list[tuple[Solver, str, str]] = []
        used: list[Solver] = []  # each solver once, in the order first used
        try:
            pending: list[tuple[messages.AuthorizationResource, messages.ChallengeBody, Any]] = []
            for authzr in orderr.authorizations:
                domain = authzr.body.identifier.value
                if authzr.body.status == messages.STATUS_VALID:
                    continue  # reused authorization: nothing to answer
                if authzr.body.status != messages.STATUS_PENDING:
                    raise OrderFailed(
                        self.s.label, f"authorization for {domain} is {authzr.body.status}"
                    )
                name = f"*.{domain}" if authzr.body.wildcard else domain
                solver = solver_for(name)
                if solver not in used:
                    used.append(solver)
                challb = _challenge(authzr, solver.kind)
                if challb is None:
                    offered = ", ".join(str(_typ(c)) for c in authzr.body.challenges)
                    raise OrderFailed(
                        self.s.label,
                        f"the CA offers no {solver.kind} challenge for {name} "
                        f"(offered: {offered or 'none'})",
                    )
                if solver.kind == PERSIST:
                    # dns-persist-01: the standing record is checked on the authoritative
                    # servers first (a clear error before the CA tries), then the
                    # challenge is answered with an empty object; nothing is presented.
                    issuers = challb.chall.jobj.get("issuer-domain-names") or []
                    url = acme.net.account.uri if acme.net.account is not None else ""
                    solver.check(name, [str(x) for x in issuers], url)  # type: ignore[attr-defined]
                    pending.append((authzr, challb, Raw({})))
                    continue
                if solver.kind == "tls-alpn-01":
                    # The acme library no longer knows tls-alpn-01 (RFC 8737): the key
                    # authorization is made here, the solver makes the certificate, and
                    # the challenge is answered with an empty object (RFC 8555 7.5.1).
                    token = str(challb.chall.jobj.get("token", ""))
                    validation = f"{token}.{thumbprint(self.s.account_key())}"
                    response: Any = Raw({})
                else:
                    response, validation = challb.response_and_validation(self.s.account_key())
                    token = challb.chall.encode("token")
                presented.append((solver, domain, token))
                solver.present(domain, token, validation)
                pending.append((authzr, challb, response))
            # All presented: dns-01 publishes every record of the order at once and
            # waits for them; only then is the CA asked to validate.
            for solver in used:
                solver.ready()
            for _, challb, response in pending:
                acme.answer_challenge(challb, response)
            for authzr, _, _ in pending:
                self._await(acme, authzr, deadline)
        finally:
            for solver, domain, token in presented:
                try:
                    solver.cleanup(domain, token)
                except Exception as exc:  # cleanup must not hide the order's own outcome
                    log.warning("challenge cleanup for %s failed: %s", domain, exc)
            for solver in used:
                try:
                    solver.finish()
                except Exception as exc:  # the journal keeps them: the next run removes them
                    log.warning("%s cleanup failed: %s", solver.kind, exc)

    def _await(
        self, acme: client.ClientV2, authzr: messages.AuthorizationResource, deadline: float
    ) -> None:
        domain = authzr.body.identifier.value
        for delay in self._delays(deadline, f"validation of {domain}"):
            resp = self.s.post_as_get(acme, authzr.uri)
            body = messages.Authorization.from_json(resp.json())
            if body.status == messages.STATUS_VALID:
                return
            problems = [c.error for c in body.challenges if c.error is not None]
            if body.status != messages.STATUS_PENDING or problems:
                # step-ca leaves a failed authorization pending with an error on the challenge.
                detail = "; ".join(problem_text(p) for p in problems) or str(body.status)
                ptype = problems[0].typ if problems else None
                raise OrderFailed(
                    self.s.label,
                    f"validation of {domain} failed: {detail}",
                    ptype,
                    problems[0].detail if problems else None,
                )
            self.s.sleep(max(delay, retry_after_seconds(resp, 0.0)))

    def _delays(self, deadline: float, what: str) -> Iterator[float]:
        return delays(self.s, deadline, what)


def delays(s: Session, deadline: float, what: str) -> Iterator[float]:
    """Short delays first (a local CA answers in milliseconds), then at most 2 s."""
    i = 0
    while s.monotonic() < deadline:
        yield POLL_DELAYS[min(i, len(POLL_DELAYS) - 1)]
        i += 1
    raise OrderFailed(
        s.label,
        f"{what} did not finish within {s.policy.order_timeout:g} s (policy.order_timeout)",
    )


def _challenge(authzr: messages.AuthorizationResource, kind: str) -> messages.ChallengeBody | None:
    for challb in authzr.body.challenges:
        if _typ(challb) == kind:
            return challb
    return None


def _typ(challb: messages.ChallengeBody) -> object:
    """The challenge's type, also for those the acme library no longer parses."""
    if isinstance(challb.chall, challenges.UnrecognizedChallenge):
        return challb.chall.jobj.get("type")
    return challb.chall.typ
