"""What the CA said, as certagent's errors: every foreign exception is translated at
this border into OrderFailed (or CABusy, CAUnreachable) carrying the CA's own words,
the HTTP status that carried them and its Retry-After, from construction. A problem
document is read by its type (RFC 8555 section 6.7) whatever the HTTP status and
whether or not the acme library knows the type.

Side effects: none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests
from acme import client, errors, messages
from josepy.errors import DeserializationError

from ..errors import CABusy, CAUnreachable, OrderFailed


class ProfileUnknown(OrderFailed):
    """The configured profile is not among the CA's `meta.profiles`."""

    code = "profile"


class TermsNotAgreed(OrderFailed):
    """The CA has terms of service and the configuration does not agree to them."""

    code = "terms-of-service"


@contextmanager
def translated(
    label: str,
    timeout: float,
    what: str,
    last_response: Callable[[], requests.Response | None],
) -> Iterator[None]:
    """Translate foreign exceptions into OrderFailed with the CA's own words, the HTTP
    status that carried them and the CA's Retry-After; 429/503 and rateLimited are
    CABusy, no answer at all is CAUnreachable."""
    try:
        yield
    except OrderFailed:
        raise
    except messages.Error as exc:
        resp = last_response()
        status = resp.status_code if resp is not None else None
        message = f"{what} refused: {problem_text(exc)}"
        if status is not None and status >= 500:
            message += f" (HTTP {status})"
        kind = CABusy if code(exc) == "rateLimited" or status in (429, 503) else OrderFailed
        raise kind(label, message, exc.typ, exc.detail, status=status,
                   retry_at=retry_at(resp)) from exc  # fmt: skip
    except requests.exceptions.SSLError as exc:
        raise OrderFailed(
            label,
            f"TLS verification of the CA failed ({root_cause(exc)}); "
            "add its root under ca.trust_roots",
        ) from exc
    except requests.exceptions.Timeout as exc:
        raise CAUnreachable(
            label, f"{what}: the CA did not answer within {timeout:g} s"
        ) from exc
    except requests.exceptions.ConnectionError as exc:
        raise CAUnreachable(label, f"cannot reach the CA: {root_cause(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        raise OrderFailed(label, f"request to the CA failed: {root_cause(exc)}") from exc
    except errors.Error as exc:
        text = client_error_text(exc)
        resp = response_of(exc) or last_response()
        status = resp.status_code if resp is not None else None
        if status in (429, 503):
            raise CABusy(label, f"{what}: the CA is busy: {text}", status=status,
                         retry_at=retry_at(resp)) from exc  # fmt: skip
        raise OrderFailed(label, f"{what} failed: {text}", status=status,
                          retry_at=retry_at(resp)) from exc  # fmt: skip
    except KeyError as exc:  # a directory without newNonce, newAccount or newOrder
        raise OrderFailed(
            label, f"{what}: the CA's directory does not offer {exc} (not ACME?)"
        ) from exc
    except (ValueError, TypeError, DeserializationError) as exc:
        raise OrderFailed(label, f"{what}: unexpected answer from the CA: {exc}") from exc


def code(problem: messages.Error) -> str | None:
    """The ACME error type's name (`alreadyReplaced`), also for types the acme library
    does not list (its own `code` is None for those)."""
    typ = str(problem.typ or "")
    prefix = messages.ERROR_PREFIX
    return typ[len(prefix) :] if typ.startswith(prefix) else None


def about_replaces(exc: messages.Error) -> bool:
    """alreadyReplaced, or a CA that refuses the `replaces` field itself."""
    found = code(exc)
    return found == "alreadyReplaced" or (
        found in ("malformed", "badRequest") and "replaces" in (exc.detail or "")
    )


def problem_of(response: requests.Response) -> messages.Error | None:
    """The problem document a response carries (RFC 7807), or None."""
    try:
        jobj = response.json()
    except ValueError:
        return None
    if not isinstance(jobj, dict) or "type" not in jobj:
        return None
    try:
        problem: messages.Error = messages.Error.from_json(jobj)
    except (DeserializationError, TypeError, ValueError):
        return None
    return problem


def problem_text(problem: messages.Error) -> str:
    text = f"{problem.typ}: {problem.detail or problem.title or 'no detail'}"
    for sub in problem.subproblems or ():
        ident = sub.identifier.value if sub.identifier else "?"
        text += f"; {ident}: {sub.typ}: {sub.detail}"
    return text


def response_of(exc: errors.Error) -> requests.Response | None:
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, tuple) and arg and isinstance(arg[0], requests.Response):
        arg = arg[0]
    return arg if isinstance(arg, requests.Response) else None


def client_error_text(exc: errors.Error) -> str:
    resp = response_of(exc)
    if resp is not None:
        text = f"HTTP {resp.status_code} from {resp.url}"
        if "Retry-After" in resp.headers:
            text += f" (Retry-After: {resp.headers['Retry-After']}, beyond what this run waits)"
        return text
    return str(exc) or type(exc).__name__


def root_cause(exc: BaseException) -> str:
    """The innermost OS-level reason (e.g. 'Connection refused'), not urllib3's wrapper prose."""
    reason, todo, seen = str(exc), [exc], set()
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.strerror:
            reason = err.strerror
        links = (err.__cause__, err.__context__, getattr(err, "reason", None), *err.args)
        todo.extend(x for x in links if isinstance(x, BaseException))
    return reason


def retry_after_seconds(resp: requests.Response | None, default: float) -> float:
    """Retry-After as seconds (RFC 9110 section 10.2.3): delta-seconds or an HTTP date."""
    if resp is None or "Retry-After" not in resp.headers:
        return default
    when = client.ClientV2.retry_after(resp, int(default))
    return max(0.0, (when - dt.datetime.now()).total_seconds())


def retry_at(resp: requests.Response | None) -> dt.datetime | None:
    """The CA's Retry-After as a time, when the answer carried one."""
    if resp is None or "Retry-After" not in resp.headers:
        return None
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry_after_seconds(resp, 0.0))
