"""The wire to the CA: the acme library's ClientNetwork (JWS signing, nonces) with what
it lacks: bad nonces retried in a loop (pebble rejects 5 % by default; the library
retries once), 429/503 waited out honouring Retry-After up to a bound, the CA's Date
header read against our clock, and a 409 carrying a problem document read as that
problem. Also the two JSON shapes the library cannot send (newOrder with `replaces`,
a raw object). And the transport port, `Wire`: given one, requests go to it in the
process instead of over a socket (the unit tests' ACME server, tests/acmefake.py).

Side effects: network (none through a `Wire`).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import os
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import requests
from acme import client, errors, messages
from josepy.interfaces import JSONDeSerializable
from josepy.json_util import field as jose_field
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC

from .. import __version__
from .problems import code, problem_of, retry_after_seconds

USER_AGENT = f"certagent/{__version__} acme-python"
BAD_NONCE_RETRIES = 10  # pebble rejects 5 % of nonces by default; the library retries once
BUSY_RETRIES = 3  # 429 and 503 with a Retry-After we are willing to wait for


class Wire(Protocol):
    """Where requests go instead of a socket: (method, url, headers, body) -> (status,
    headers, body)."""

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]: ...


class _WireAdapter(requests.adapters.BaseAdapter):
    """requests' transport through a `Wire`: the client above it is unchanged."""

    def __init__(self, wire: Wire) -> None:
        super().__init__()
        self.wire = wire

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        status, headers, content = self.wire(
            str(request.method), str(request.url), dict(request.headers), body
        )
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        response._content = content
        response.url = str(request.url)
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


class NewOrder(messages.NewOrder):
    """newOrder with ARI's `replaces` (RFC 9773 section 5)."""

    replaces: str | None = jose_field("replaces", omitempty=True)


class Raw(JSONDeSerializable):
    """A JSON object posted as it is (the inner JWS of a keyChange, an empty answer)."""

    def __init__(self, jobj: dict[str, Any]) -> None:
        self.jobj = jobj

    def to_partial_json(self) -> dict[str, Any]:
        return self.jobj

    @classmethod
    def from_json(cls, jobj: Any) -> Raw:
        return cls(jobj)


class Network(client.ClientNetwork):
    """ClientNetwork that retries bad nonces in a loop and honours Retry-After on 429/503."""

    def __init__(
        self,
        key: JWK,
        ca_bundle: str | None,
        timeout: float,
        sleep: Callable[[float], None],
        max_wait: float,
        wire: Wire | None = None,
    ) -> None:
        alg: JWASignature = ES256 if isinstance(key, JWKEC) else RS256
        super().__init__(key, alg=alg, user_agent=USER_AGENT, timeout=math.ceil(timeout))
        # The environment is read once per CA host, not on every request: requests reads
        # all of os.environ twice a request for proxies, and ~/.netrc, when it trusts the
        # environment (a fifth of a busy run's CPU). The same proxies (no_proxy honoured)
        # and the same CA bundle variables as requests' own; no netrc credentials, which
        # no ACME request wants.
        self.session.trust_env = False
        self._proxies: dict[tuple[str, str], dict[str, str]] = {}
        env_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle is not None or env_bundle:
            # requests accepts a CA bundle path wherever it accepts verify=True;
            # verification stays on, with the configured roots added.
            self.verify_ssl = ca_bundle or env_bundle  # type: ignore[assignment]
        self.last_response: requests.Response | None = None
        self.clock_skew: float | None = None  # our clock minus the CA's, from its Date
        self._sleep = sleep
        self._max_wait = max_wait
        if wire is not None:
            adapter = _WireAdapter(wire)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        """As the library's, except that a 409 carrying a problem document (RFC 9773
        section 5's alreadyReplaced, RFC 8555 section 6.7) is that problem: the library
        raises ConflictError for every 409 before reading its body. A 409 with a
        Location and no problem (an account that exists) stays a ConflictError."""
        if response.status_code == 409 and "Location" not in response.headers:
            problem = problem_of(response)
            if problem is not None:
                raise problem
        checked: requests.Response = super()._check_response(response, content_type)
        return checked

    def proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for a URL's host (none when no_proxy names it), as
        requests would find them, read once per host."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._proxies.get(key)
        if found is None:
            found = self._proxies[key] = requests.utils.get_environ_proxies(url)
        return found

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("proxies", dict(self.proxies_for(url)))
        self.last_response = super()._send_request(method, url, *args, **kwargs)
        self._note_clock(self.last_response)
        return self.last_response

    def _note_clock(self, resp: requests.Response) -> None:
        """The CA's Date header against our clock (RFC 9110 section 6.6.1): a skew of
        minutes makes new certificates look not yet valid here, so it is named."""
        try:
            theirs = email.utils.parsedate_to_datetime(resp.headers["Date"])
        except (KeyError, TypeError, ValueError, IndexError):
            return
        if theirs.tzinfo is None:
            return
        self.clock_skew = (dt.datetime.now(dt.UTC) - theirs).total_seconds()

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        nonce_failures = busy = 0
        while True:
            try:
                return self._post_once(*args, **kwargs)
            except (messages.Error, errors.ClientError) as error:
                found = code(error) if isinstance(error, messages.Error) else None
                if found == "badNonce" and nonce_failures < BAD_NONCE_RETRIES:
                    nonce_failures += 1
                    continue
                # 429/503 are retried whatever the body says (a problem document, plain
                # text or HTML from a proxy), waiting out Retry-After up to the bound.
                wait = self._busy_wait()
                if wait is None or busy >= BUSY_RETRIES:
                    raise
                busy += 1
                self._sleep(wait)

    def get(
        self, url: str, content_type: str = client.ClientNetwork.JSON_CONTENT_TYPE, **kwargs: Any
    ) -> requests.Response:
        for _ in range(BUSY_RETRIES):
            try:
                return super().get(url, content_type, **kwargs)
            except (messages.Error, errors.ClientError):
                wait = self._busy_wait()
                if wait is None:
                    raise
                self._sleep(wait)
        return super().get(url, content_type, **kwargs)

    def _busy_wait(self) -> float | None:
        """Seconds to wait when the CA said 429/503 with an acceptable Retry-After."""
        resp = self.last_response
        if resp is None or resp.status_code not in (429, 503):
            return None
        wait = retry_after_seconds(resp, default=1.0)
        return wait if wait <= self._max_wait else None
