"""The kinds of value a configuration key can hold, each described once.

A kind converts a YAML value (reporting problems with the key path and line), and says
what it accepts: as a JSON Schema fragment and as the words of the reference tables.
`configspec` builds the description of every key from these; `config` validates with
that description, so the loader, `docs/configuration.md` and
`certagent/schemas/config.schema.json` cannot disagree (tests/test_configspec.py).
Split by what they hold: `base` (the value tree, the checker, scalars), `system` (what
names something on the network or this machine), `containers` (lists, sections, maps).

Pure: no YAML here (`config` owns the parser); `SecretFile` reads the file it names.
"""

from __future__ import annotations

from .base import (
    DAY,
    DAYS,
    DURATION,
    FRACTION,
    HOUR,
    MAX_SECRET_BYTES,
    MINUTE,
    NET_TIMEOUT,
    PORT,
    STARTTLS,
    TIMEOUT,
    VRRP_NAME,
    AbsPath,
    Bool,
    Checker,
    Choice,
    Count,
    Duration,
    Either,
    Kind,
    RelPath,
    Text,
    Url,
    Value,
    Word,
    human,
    kind_of,
    read_bounded,
)
from .containers import (
    ARGV,
    PATHS,
    Env,
    Free,
    Key,
    ListOf,
    MapOf,
    Names,
    OneOrList,
    Section,
    ip_name,
)
from .system import (
    Address,
    Contact,
    Group,
    HostPort,
    Interface,
    SecretFile,
    User,
)

__all__ = [
    "ARGV",
    "DAY",
    "DAYS",
    "DURATION",
    "FRACTION",
    "HOUR",
    "MAX_SECRET_BYTES",
    "MINUTE",
    "NET_TIMEOUT",
    "PATHS",
    "PORT",
    "STARTTLS",
    "TIMEOUT",
    "VRRP_NAME",
    "AbsPath",
    "Address",
    "Bool",
    "Checker",
    "Choice",
    "Contact",
    "Count",
    "Duration",
    "Either",
    "Env",
    "Free",
    "Group",
    "HostPort",
    "Interface",
    "Key",
    "Kind",
    "ListOf",
    "MapOf",
    "Names",
    "OneOrList",
    "RelPath",
    "SecretFile",
    "Section",
    "Text",
    "Url",
    "User",
    "Value",
    "Word",
    "human",
    "ip_name",
    "kind_of",
    "read_bounded",
]
