"""Every configuration key, described once: its kind (type and bounds), default, and
meaning. `config` validates with this description; `json_schema()` and `render_docs()`
are generated from it (certagent/schemas/config.schema.json and the tables of
docs/configuration.md; `make docs` rewrites both, tests/test_configspec.py fails when
they are stale).

The description is split by what it covers: `common` (commands, endpoints), `certificate`
(each certificate), `ca` (the CAs and the policy), `watch` (monitor, notify, heartbeat), `pair`
(keepalived); `top` composes them into TOP, and `docs` generates from TOP. Pure
data and two generators; no I/O.
"""

from .ca import CA, POLICY, STAGING
from .certificate import (
    CERTIFICATE,
    CHALLENGE,
    DEPLOY,
    LINK,
    RFC2136,
    STAGING_TARGET,
    TEMPLATE,
)
from .common import (
    CERT_NAME,
    COMMAND,
    DEPLOY_ENDPOINTS,
    ENDPOINT,
    ENDPOINTS,
    CommandKind,
    EndpointKind,
)
from .docs import json_schema, render_docs, section, table
from .pair import DUMP_DIR, KEEPALIVED, PEER
from .top import (
    CERTIFICATES,
    DEFAULTS,
    EAB,
    FAILOVER,
    INSTANCE,
    INSTANCES,
    MAX_CERTIFICATES,
    MAX_PARTS,
    MAX_PARTS_BYTES,
    METRICS,
    STANDALONE,
    TOP,
)
from .watch import EMAIL, HEARTBEAT, MONITOR, MONITOR_ENDPOINT, NOTIFY, WEBHOOK

__all__ = [
    "CA",
    "CERTIFICATE",
    "CERTIFICATES",
    "CERT_NAME",
    "CHALLENGE",
    "COMMAND",
    "DEFAULTS",
    "DEPLOY",
    "DEPLOY_ENDPOINTS",
    "DUMP_DIR",
    "EAB",
    "EMAIL",
    "ENDPOINT",
    "ENDPOINTS",
    "FAILOVER",
    "HEARTBEAT",
    "INSTANCE",
    "INSTANCES",
    "KEEPALIVED",
    "LINK",
    "MAX_CERTIFICATES",
    "MAX_PARTS",
    "MAX_PARTS_BYTES",
    "METRICS",
    "MONITOR",
    "MONITOR_ENDPOINT",
    "NOTIFY",
    "PEER",
    "POLICY",
    "RFC2136",
    "STAGING",
    "STAGING_TARGET",
    "STANDALONE",
    "TEMPLATE",
    "TOP",
    "WEBHOOK",
    "CommandKind",
    "EndpointKind",
    "json_schema",
    "render_docs",
    "section",
    "table",
]  # fmt: skip
