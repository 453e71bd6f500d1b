"""What watches the certificates: `monitor`, `notify` and `heartbeat`."""

from __future__ import annotations

from ..configkinds import (
    DAY,
    DAYS,
    FRACTION,
    HOUR,
    NET_TIMEOUT,
    PATHS,
    PORT,
    STARTTLS,
    TIMEOUT,
    Bool,
    Choice,
    Contact,
    Count,
    Duration,
    HostPort,
    Key,
    ListOf,
    SecretFile,
    Section,
    Url,
    Word,
)
from .common import ROOTS_DOC

MONITOR_ENDPOINT = Section(
    Key("address", HostPort(), doc="where to connect", required=True),
    Key(
        "name",
        Word(),
        doc="the label in output and perfdata; `check NAME` selects it",
        default_doc="the address",
    ),
    Key("sni", Word("DNS name"), doc="the server name sent and verified", default_doc="the host"),
    Key(
        "starttls",
        Choice(*STARTTLS, what="protocol"),
        doc="the plaintext opening before TLS",
        default_doc="none (TLS from the first byte)",
    ),
    Key(
        "warning_days",
        DAYS,
        doc="this endpoint's WARNING threshold",
        default_doc="`monitor.warning_days`",
    ),
    Key(
        "critical_days",
        DAYS,
        doc="this endpoint's CRITICAL threshold",
        default_doc="`monitor.critical_days`",
    ),
    Key("trust_roots", PATHS, (), "extra roots for this endpoint only"),
)

MONITOR = Section(
    Key(
        "warning_days",
        DAYS,
        14.0,
        "WARNING at or below this many days left, or at `warning_share` of the "
        "certificate's own lifetime left if that is fewer days (a fresh 6-day "
        "certificate is OK)",
    ),
    Key(
        "critical_days",
        DAYS,
        3.0,
        "CRITICAL at or below this many days left (must not exceed `warning_days`), or at "
        "`critical_share` of the certificate's lifetime left if that is fewer",
    ),
    Key(
        "warning_share",
        FRACTION,
        1 / 3,
        "the share of a certificate's lifetime (not_after - not_before) left at which it "
        "is WARNING when that is sooner than `warning_days`: certificates of any "
        "lifetime are judged alike (6 days: at 2 days left; 6 hours: at 2 hours)",
    ),
    Key(
        "critical_share",
        FRACTION,
        1 / 6,
        "the same for CRITICAL (must not exceed `warning_share`)",
    ),
    Key(
        "timeout",
        NET_TIMEOUT,
        5.0,
        "per endpoint: connect, STARTTLS opening and handshake; probes run concurrently",
    ),
    Key(
        "max_renew_age",
        Duration(0, 366 * DAY, above=True),
        doc="CRITICAL when the last "
        "completed `renew` run (from `history.jsonl`) is older, or there is none: cron "
        "stopped, timer disabled. Recommended: a little over twice the timer interval, "
        "e.g. `30h`",
        default_doc="none",
    ),
    Key("trust_roots", PATHS, (), "roots added to the system store for every probe"),
    Key("endpoints", ListOf(MONITOR_ENDPOINT, "list (below)"), (), "services we do not issue for"),
)

WEBHOOK = Section(
    Key("url", Url(), doc="where to POST", required=True),
    Key("timeout", TIMEOUT, 10.0, "per attempt"),
    Key("retries", Count(1, 20), 3, "attempts in all"),
    Key("backoff", Duration(0, HOUR), 2.0, "the wait before the second attempt, doubled each time"),
    Key("trust_roots", PATHS, (), ROOTS_DOC),
    text="`{url, timeout, retries, backoff, trust_roots}`",
)

EMAIL = Section(
    Key("host", Word(), doc="the SMTP server", required=True),
    Key("port", PORT, 587, "its submission port"),
    Key("from", Contact(), doc="the sender", required=True),
    Key("to", ListOf(Contact(), nonempty=True), doc="the recipients", required=True),
    Key(
        "starttls",
        Bool(),
        True,
        "use STARTTLS (the server certificate is verified); a password is never sent without it",
    ),
    Key("username", Word(), doc="SMTP login; give both `username` and `password_file`, or neither"),
    Key("password_file", SecretFile(), doc="the SMTP password, in a root-only file"),
    Key("timeout", TIMEOUT, 20.0, "per message"),
    Key("trust_roots", PATHS, (), ROOTS_DOC),
    text="mapping (below)",
)

NOTIFY = Section(
    Key("expiry_days", DAYS, 14.0, "a live certificate this close to expiry is a problem"),
    Key(
        "webhook",
        WEBHOOK,
        doc="JSON POST per event; `retries` attempts in all, waiting `backoff`, doubled each time",
    ),
    Key("email", EMAIL, doc="one message per event"),
)

HEARTBEAT = Section(
    Key("url", Url(), doc="where to POST", required=True),
    Key("timeout", TIMEOUT, 10.0, "per attempt"),
    Key("trust_roots", PATHS, (), ROOTS_DOC),
    text="`{url, timeout, trust_roots}`",
)
