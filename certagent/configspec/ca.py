"""The sections of the certificate authorities and how they are used: `ca`, `staging`
(the CA rehearsals are ordered from) and `policy`."""

from __future__ import annotations

from ..configkinds import (
    DAY,
    DURATION,
    FRACTION,
    HOUR,
    MINUTE,
    NET_TIMEOUT,
    PATHS,
    TIMEOUT,
    AbsPath,
    Bool,
    Choice,
    Contact,
    Count,
    Duration,
    Key,
    ListOf,
    SecretFile,
    Section,
    Url,
    Word,
)

CA = Section(
    Key("directory", Url(), doc="the ACME directory URL", required=True),
    Key(
        "contact",
        ListOf(Contact()),
        (),
        "account contacts (`ops@example.com` becomes `mailto:ops@example.com`)",
    ),
    Key(
        "trust_roots",
        PATHS,
        (),
        "extra roots to trust for this CA's HTTPS (a private CA); "
        "added to the system store, never instead of verification",
    ),
    Key(
        "eab",
        Section(
            Key("kid", Word(), doc="the key id", required=True),
            Key("hmac_key", Word(), doc="the base64url HMAC key, inline"),
            Key("hmac_key_file", SecretFile(), doc="… or (better) in a root-only file"),
            one_of=(("hmac_key",), ("hmac_key_file",)),
            text="`{kid, hmac_key or hmac_key_file}`",
        ),
        doc="external account binding (RFC 8555 §7.3.4): `kid`, and exactly one of "
        "`hmac_key` (the base64url HMAC key) and `hmac_key_file` (better: a root-only file "
        "holding it)",
    ),
    Key("timeout", NET_TIMEOUT, 30.0, "per HTTP request to the CA"),
    Key(
        "profile",
        Word(),
        doc="the ACME profile ordered at this CA for a certificate that names none (a "
        "certificate's own `profile` is ordered at the preferred CA only: a fallback CA "
        "orders its own `profile`, or none)",
    ),
    Key(
        "agree_tos",
        Bool(),
        False,
        "agree to the CA's terms of service when registering "
        "an account; without it a CA that has terms (its directory's "
        "`meta.termsOfService`) is not registered with, and the run says where to read "
        "them. An account that exists already is unaffected",
    ),
    Key(
        "max_orders",
        Count(1, 16),
        4,
        "orders in flight at this CA at once, whatever `policy.concurrency` says (a public "
        "CA is never hammered); a 503 with Retry-After from the CA stops every order of "
        "the run, and a Retry-After is kept for later runs",
    ),
    Key(
        "max_new_orders",
        Count(1, 1_000_000),
        300,
        "new orders sent to this CA in any `new_orders_window`, across runs (the default "
        "is Let's Encrypt's published \"New Orders per Account\" limit, 300 every 3 hours: "
        "https://letsencrypt.org/docs/rate-limits/). A certificate due beyond it is not "
        "ordered but deferred to a later run (skipped, said in the report, not a "
        "failure), so a node with thousands of certificates due at once spreads them itself",
    ),
    Key(
        "new_orders_window",
        Duration(60, 30 * DAY),
        3 * HOUR,
        "the window of `max_new_orders`",
    ),
    Key(
        "max_duplicates",
        Count(1, 1_000_000),
        5,
        "certificates for exactly the same set of names ordered from this CA in any "
        "`duplicates_window`, across runs (Let's Encrypt's published \"Duplicate "
        'Certificate" limit: 5 per 7 days). An order that would pass it is refused '
        "before anything is sent, naming the date it becomes possible; `renew "
        "--allow-duplicate` overrides",
    ),
    Key(
        "duplicates_window",
        Duration(60, 90 * DAY),
        7 * DAY,
        "the window of `max_duplicates`",
    ),
    Key(
        "preferred_chain",
        Word(),
        doc="the common name of the root (or topmost issuer) "
        "wanted at the top of the chain: the default chain and the CA's `alternate` chains "
        "(RFC 8555 §7.4.2) are searched for it; if none leads there, the default is kept "
        "and a warning said",
    ),
)

POLICY = Section(
    Key(
        "keep_releases", Count(1, 1000), 5, "releases kept per certificate (the current one always)"
    ),
    Key("order_timeout", TIMEOUT, 120.0, "deadline for one order: validations and issuance"),
    Key(
        "max_retry_after",
        Duration(0, DAY),
        120.0,
        "the longest Retry-After on a 429/503 "
        "that certagent waits out within a run; longer ones fail the run",
    ),
    Key(
        "failure_backoff",
        Duration(0, 30 * DAY),
        3600.0,
        "after a failed run, wait this "
        "long (doubled per consecutive failure, at most `max_backoff`) before trying again; "
        "`0` disables",
    ),
    Key(
        "max_backoff",
        Duration(0, 30 * DAY),
        86400.0,
        "the longest wait between attempts "
        "after failures, at any failure count (a CA outage of any length); must not be "
        "below `failure_backoff`",
    ),
    Key(
        "concurrency",
        Count(1, 64),
        4,
        "certificates worked on at once: planning, renewal information and orders run "
        "concurrently (at most `ca.max_orders` orders in flight at the CA); rehearsals, "
        "the keepalived gate and deploys still run one at a time, in the configured order. "
        "`1` works through them one by one",
    ),
    Key(
        "jitter",
        FRACTION,
        0.05,
        "share of the lifetime over which renewal times are spread, stably per certificate",
    ),
    Key(
        "run_every",
        Duration(MINUTE, 7 * DAY),
        12 * HOUR,
        "how often certagent runs (the shipped timer and cron file: every 12 h); `config "
        "validate` warns when a certificate's lifetime leaves fewer than 2 runs between its "
        "renewal time and its expiry",
    ),
)

STAGING = Section(
    Key(
        "ca",
        CA,
        doc="the staging ACME CA; the same keys as `ca` (directory, trust_roots "
        "for its TLS, eab, contact, timeout)",
        required=True,
    ),
    Key(
        "state_dir",
        AbsPath(),
        doc="the staging releases, account and rehearsal records (0700)",
        default_doc="`<state_dir>/staging`",
    ),
    Key(
        "on_unreachable",
        Choice("fail", "proceed"),
        "fail",
        "when the staging CA cannot be "
        "reached at all (connection refused, DNS, timeout): `fail` stops production (fails "
        "closed); `proceed` goes on unrehearsed and says so in the report. A TLS "
        'verification failure is never "unreachable"',
    ),
    Key(
        "remember_for",
        DURATION,
        30 * DAY,
        "a passing rehearsal is not repeated while every "
        "input is unchanged and it is younger than this; `0` rehearses every time. The "
        "inputs: names, key type, both deploy sections, every template's source, and the "
        "content of every file the hooks and tests run or name (a program on PATH, a "
        "script, a file argument)",
    ),
)
