"""Whether the CA may be sent anything: its Retry-After for every client (kept across
runs in hold.json) and a circuit breaker (kept across runs in breaker.json, castate.py).

No answer at all stops the run's requests at once; so does a CA-wide Retry-After (one
on the directory, a nonce or the account, or any 503), which is also kept for later
runs; BREAKER_AFTER consecutive 5xx answers open the breaker, and the run after probes
with one request (one more outage answer stops it at once). What is refused is
CAUnavailable: nothing was sent, so the certificate is skipped, not failed.

Side effects: hold.json and breaker.json in the CA's folder.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..castate import breaker_open, close_breaker, open_breaker, read_hold, write_hold
from ..errors import CAUnavailable, CAUnreachable, OrderFailed

log = logging.getLogger(__name__)

BREAKER_AFTER = 3  # consecutive 5xx answers in a run before nothing more is sent to the CA


class CAHealth:
    def __init__(self, label: str, folder: Path, lock: threading.RLock) -> None:
        self.label = label
        self._folder = folder
        self._lock = lock  # the session's: a trip under it is seen by every waiting thread
        self._down: str | None = None  # why the CA is not asked again in this run
        self._hold: dt.datetime | None = None  # until when (the CA's Retry-After)
        self._outages = 0  # consecutive 5xx answers in this run
        # the errors counted already, by id; held, so that no id is reused for another
        self._counted: dict[int, OrderFailed] = {}
        # an earlier run left the breaker open: the first request is a probe
        self._probing = breaker_open(folder) is not None

    def refuse(self, verb: str = "sent") -> None:
        """Raise CAUnavailable when nothing may go to the CA now: its Retry-After holds
        (from an earlier run too) or this run found it down."""
        with self._lock:
            if self._down is None:
                held = read_hold(self._folder, dt.datetime.now(dt.UTC))
                if held is not None:
                    self._hold, self._down = held
        if self._down is not None:
            raise CAUnavailable(self.label, f"not {verb}: {self._down}", retry_at=self._hold,
                                repeated=True)  # fmt: skip

    def still_up(self) -> None:
        """Raise when another thread found the CA down while this one waited its turn."""
        if self._down is not None:
            raise CAUnavailable(self.label, f"not sent: {self._down}", retry_at=self._hold,
                                repeated=True)  # fmt: skip

    def trip(self, exc: OrderFailed, ca_wide: Callable[[OrderFailed], bool]) -> None:
        """Count what says the CA itself is in trouble, and stop sending it anything in
        this run when it is (see the module's docstring). Each error counts once."""
        if isinstance(exc, CAUnavailable):
            return
        with self._lock:
            if id(exc) in self._counted or self._down is not None:
                return  # counted already, or said by the request that found it first
            self._counted[id(exc)] = exc
            if exc.retry_at is not None and ca_wide(exc):
                self._hold = exc.retry_at
                until_text = f"{exc.retry_at:%Y-%m-%d %H:%M:%S} UTC"
                self._down = (f"the CA answered {exc.status or 'busy'} and asked every "
                              f"client to wait until {until_text}")  # fmt: skip
                until, why = exc.retry_at, str(exc)
                self._remember(lambda: write_hold(self._folder, until, why))
                return
            if isinstance(exc, CAUnreachable):
                self._down = f"the CA was unreachable earlier in this run ({exc})"
            elif exc.status is not None and exc.status >= 500:
                self._outages += 1
                if self._outages >= (1 if self._probing else BREAKER_AFTER):
                    probe = "the probe of a CA found down by an earlier run failed: " if (
                        self._probing) else ""  # fmt: skip
                    self._down = (f"{probe}{self._outages} answer(s) of HTTP {exc.status} "
                                  "in a row from the CA (circuit breaker)")  # fmt: skip
            else:
                self._outages = 0  # an answer that is the CA working (a refusal, a 4xx)
                return
            if self._down is not None:
                why = self._down
                self._remember(lambda: open_breaker(self._folder, dt.datetime.now(dt.UTC), why))

    def healthy(self) -> None:
        """An answer that shows the CA working: the breaker's count starts again, and a
        breaker an earlier run left open is closed."""
        with self._lock:
            self._outages = 0
            if self._probing:
                self._probing = False
                self._remember(lambda: close_breaker(self._folder))

    def _remember(self, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as exc:  # a full disk: this run still stops; the next asks again
            log.warning("%s: cannot record what the CA said: %s", self.label, exc.strerror)
