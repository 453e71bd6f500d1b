"""The configuration's description composed into TOP, from the parts in `common`,
`certificate`, `watch` and `pair`, with the named sections `config` reads.
Pure data; no I/O.
"""

from __future__ import annotations

from pathlib import Path

from ..configkinds import PATHS, AbsPath, Group, Key, ListOf, MapOf, OneOrList, Section, Word
from .ca import CA, POLICY, STAGING
from .certificate import CERTIFICATE, CHALLENGE
from .common import (
    CERT_NAME,
    unwrap,
)
from .pair import KEEPALIVED
from .watch import HEARTBEAT, MONITOR, NOTIFY

MAX_PARTS = 10_000  # files under certificates_dir
MAX_CERTIFICATES = 100_000  # in all, the main file's and the parts'
MAX_PARTS_BYTES = 64 * 1024 * 1024  # the parts together

# `defaults`: the certificate's keys, none required
DEFAULTS = Section(
    *(Key(k.name, k.kind, k.default, k.doc, False, k.default_doc)
      for k in CERTIFICATE.keys.values()),
    text="mapping (certificate keys)",
)  # fmt: skip


TOP = Section(
    Key(
        "state_dir",
        AbsPath(),
        Path("/var/lib/certagent"),
        "releases, accounts, history, "
        "lock (created 0700). It and every directory above it must belong to root (or the "
        "user certagent runs as) and be writable by no one else (a sticky directory such "
        "as `/tmp` may be above it): otherwise every command that writes refuses it",
    ),
    Key(
        "state_group",
        Group(),
        doc="members of this group may read the certificates, keys "
        "and run state: directories 0750, keys and state files 0640, owned by the group, "
        "kept so across renews (a web server that reads keys as its own user, a monitoring "
        "user running `check`, `status` or `metrics`). Account keys stay 0700/0600. Without "
        "it everything is root's alone",
    ),
    Key(
        "ca",
        OneOrList(CA, 5),
        doc="the production ACME CA (below), or a list of up to 5 in order of preference, "
        "each with its own account: a certificate is ordered from the first usable one; "
        "when it is down (unreachable, its circuit breaker open, a Retry-After for every "
        "client), rate-limits the order, or refuses the names or the profile, the next one "
        "is used and the order step says why. ARI's `replaces` goes only to the CA that "
        "issued the certificate replaced; the next renewal tries the preferred CA again",
        required=True,
    ),
    Key("policy", POLICY, doc="renewal and retry policy (below)", default_doc="defaults below"),
    Key(
        "certificates",
        MapOf(
            CERT_NAME,
            CERTIFICATE,
            "mapping name → certificate",
            nonempty=True,
            what="certificate names to certificates",
            bad="certificate name must be letters, digits, '.', '_' or '-' (max 64)",
        ),
        doc="the certificates to keep renewed; a name is letters, digits, `.`, `_`, `-` "
        "(up to 64) and names the directory under `state_dir/certs/`",
        default_doc="required, unless `certificates_dir` holds them",
    ),
    Key(
        "certificates_dir",
        Word("directory"),
        doc="more certificates, in every `*.yaml` file of this directory (relative to the "
        "main file's), each a mapping name → certificate as under `certificates`, each file "
        f"bounded as the main one is, at most {MAX_PARTS} files of "
        f"{MAX_PARTS_BYTES // 2**20} MiB in all and {MAX_CERTIFICATES} certificates with the "
        "main file's; a name defined twice is an "
        "error naming both files. Like the main file, the directory and every part must be "
        "root's (or certagent's user's) and writable by no one else; a part that is a "
        "dangling link or not a file is an error, never left out",
    ),
    Key(
        "defaults",
        DEFAULTS,
        doc="keys every certificate gets unless it sets them itself (one challenge, one "
        "deploy shape, a key type...); mappings are merged key by key (a certificate's "
        "`deploy.templates` beside the defaults' `deploy.test` and `hook`), anything else "
        "is replaced; an error in them names the `defaults` key and its line",
    ),
    Key(
        "template_dirs",
        PATHS,
        (),
        "searched for templates before `/etc/certagent/templates`"
        " and the shipped ones; each must belong to root (or certagent's user) and be "
        "writable by no one else",
    ),
    Key("staging", STAGING, doc="a staging CA: every deploy is rehearsed there first (below)"),
    Key(
        "monitor",
        MONITOR,
        doc="what `certagent check` watches and how it judges it (below)",
        default_doc="defaults below",
    ),
    Key(
        "metrics",
        Section(
            Key("textfile", AbsPath(), doc="the Prometheus text file", required=True),
            text="`{textfile: absolute path}`",
        ),
        doc="write the Prometheus metrics there (atomically) after every run",
    ),
    Key("notify", NOTIFY, doc="notifications (below)", default_doc="no channels"),
    Key(
        "heartbeat",
        HEARTBEAT,
        doc="POST `{command, exit_status, finished, host}` after every completed `renew` run",
    ),
    Key(
        "failover",
        Section(
            Key("keepalived", KEEPALIVED, doc="this node and its peer", required=True),
            text="`{keepalived: mapping}`",
        ),
        doc='this host is one node of a keepalived pair (below; README "Two nodes behind '
        'keepalived")',
    ),
)


def _sub(parent: Section, name: str) -> Section:
    kind = unwrap(parent[name].kind)
    if isinstance(kind, MapOf | ListOf):
        kind = kind.item
    if not isinstance(kind, Section):
        raise TypeError(f"{name} is not a section")
    return kind


def _map(parent: Section, name: str) -> MapOf:
    kind = parent[name].kind
    if not isinstance(kind, MapOf):
        raise TypeError(f"{name} is not a mapping of names")
    return kind


EAB = _sub(CA, "eab")
STANDALONE = _sub(CHALLENGE, "standalone")
METRICS = _sub(TOP, "metrics")
FAILOVER = _sub(TOP, "failover")
CERTIFICATES = _map(TOP, "certificates")
INSTANCES = _map(KEEPALIVED, "instances")
INSTANCE = _sub(KEEPALIVED, "instances")
