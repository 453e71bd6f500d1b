"""What the configuration says, as frozen dataclasses and enums: the certificates, the
CA, the policy, deploys, staging, monitoring, notifications and a keepalived pair. The
loader (config.py) builds them; everything else only reads them. `model` re-exports
them beside the values of a run.

Side effects: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class KeyType(StrEnum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


@dataclass(frozen=True)
class Http01Webroot:
    """Write the key authorization under <webroot>/.well-known/acme-challenge/."""

    webroot: Path


@dataclass(frozen=True)
class Http01Standalone:
    """Answer http-01 from a small built-in HTTP server on address:port."""

    address: str
    port: int


@dataclass(frozen=True)
class Propagation:
    """Where and how long dns-01 records are waited for before the CA is asked."""

    nameservers: tuple[tuple[str, int], ...] = ()  # empty: the zone's own NS records
    resolver: tuple[str, int] | None = None  # for CNAMEs, zones and NS; None: the system's
    timeout: float = 120.0
    ttl: int = 60


@dataclass(frozen=True)
class Dns01Rfc2136:
    """dns-01 through RFC 2136 dynamic updates signed with a TSIG key."""

    server: str
    port: int
    tsig_key_file: Path
    zone: str | None = None  # None: found from the SOA
    propagation: Propagation = Propagation()


@dataclass(frozen=True)
class Dns01Hook:
    """dns-01 through the operator's program: `argv present|cleanup FQDN VALUE`."""

    command: Command
    propagation: Propagation = Propagation()


@dataclass(frozen=True)
class Dns01Persist:
    """dns-persist-01 (draft-ietf-acme-dns-persist): a standing `_validation-persist`
    TXT record names the CA and our account; nothing is published per order, so no DNS
    credentials. `issuer`: the CA's issuer domain name the record names (None: the
    first the CA's challenge offers)."""

    issuer: str | None = None
    persist_until: int | None = None  # Unix time the record says it holds until
    propagation: Propagation = Propagation()  # where the record is checked first


@dataclass(frozen=True)
class TlsAlpn01Standalone:
    """Answer tls-alpn-01 (RFC 8737) from a built-in TLS listener on address:port."""

    address: str
    port: int


ChallengeSpec = (
    Http01Webroot | Http01Standalone | Dns01Rfc2136 | Dns01Hook | Dns01Persist | TlsAlpn01Standalone
)


@dataclass(frozen=True)
class Eab:
    """External account binding (RFC 8555 section 7.3.4)."""

    kid: str
    hmac_key: str = field(repr=False)


@dataclass(frozen=True)
class CASpec:
    directory: str
    contact: tuple[str, ...] = ()
    trust_roots: tuple[Path, ...] = ()
    eab: Eab | None = None
    timeout: float = 30.0
    agree_tos: bool = False  # the CA's terms of service, agreed to by the operator
    preferred_chain: str | None = None  # the issuer CN of the chain's top, among alternates
    max_orders: int = 4  # orders in flight at this CA at once, whatever `concurrency` says
    max_new_orders: int = 300  # in any `new_orders_window` (Let's Encrypt: 300 per 3 h)
    new_orders_window: float = 3 * 3600.0
    max_duplicates: int = 5  # the same set of names in any `duplicates_window` (LE: 5 / 7 d)
    duplicates_window: float = 7 * 86400.0
    profile: str | None = None  # ordered at this CA for a certificate that names none


@dataclass(frozen=True)
class Policy:
    keep_releases: int = 5
    order_timeout: float = 120.0
    max_retry_after: float = 120.0
    failure_backoff: float = 3600.0  # after the first failure; doubled per failure after it
    max_backoff: float = 86400.0  # the doubling stops here, whatever the failure count
    jitter: float = 0.05  # share of the lifetime over which renewals are spread
    concurrency: int = 4  # certificates worked on at once (orders; deploys go one by one)
    run_every: float = 12 * 3600.0  # how often certagent runs (the timer's cadence)


@dataclass(frozen=True)
class Command:
    """An external command: argv without a shell unless `shell` was asked for explicitly."""

    argv: tuple[str, ...]
    timeout: float = 60.0
    shell: bool = False
    env: tuple[tuple[str, str], ...] = ()  # added to the child's environment (`env:`)


@dataclass(frozen=True)
class TemplateSpec:
    template: str  # relative to the template directories
    dest: Path  # becomes a symlink through the certificate's `current` link


@dataclass(frozen=True)
class LinkSpec:
    """A file of the release put in place as it is, e.g. the combined PEM (chain + key)
    in the directory a haproxy `bind ... crt DIR` reads: `dest` becomes a symlink through
    the certificate's `current` link, so it flips with everything else."""

    file: str  # the release's file name: bundle.pem, fullchain.pem, privkey.pem, ...
    dest: Path


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    sni: str
    starttls: str | None = None  # smtp, imap, postgres or ldap: the opening before TLS

    def __str__(self) -> str:
        via = f", {self.starttls} STARTTLS" if self.starttls else ""
        return f"{self.host}:{self.port} (SNI {self.sni}{via})"


@dataclass(frozen=True)
class DeploySpec:
    templates: tuple[TemplateSpec, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    test: Command | None = None
    hook: Command | None = None
    user: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    verify_timeout: float = 10.0
    trust_roots: tuple[Path, ...] = ()
    min_free_bytes: int = 16 * 1024 * 1024
    unwatched: str | None = None  # `endpoints: none`: why nothing can be probed
    group: bool = True  # deployed with the others of the same test and hook: one reload
    links: tuple[LinkSpec, ...] = ()  # release files put in place as they are
    # haproxy's admin socket: linked bundles are updated in place (no reload), else hook
    haproxy_socket: Path | None = None

    def placements(self) -> list[tuple[Path, str]]:
        """Every live path this deploy owns, and the release file it shows: rendered
        templates (`rendered/<name>`) and linked files."""
        rendered = [(t.dest, f"rendered/{t.dest.name}") for t in self.templates]
        return rendered + [(link.dest, link.file) for link in self.links]


@dataclass(frozen=True)
class StagingTarget:
    """Where and how one certificate's deploy is rehearsed against the staging CA.

    Each template renders into `dir` under its production file name, with `vars`
    laid over the production ones; `test`, `hook` and `endpoints` are the staging
    instance's own. Nothing here may point at production.
    """

    dir: Path
    vars: Mapping[str, Any] = field(default_factory=dict)
    test: Command | None = None
    hook: Command | None = None
    user: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    verify_timeout: float = 10.0
    trust_roots: tuple[Path, ...] = ()  # for the staging endpoint; default: the staging CA's
    challenge: ChallengeSpec | None = None  # default: the certificate's own


class Unreachable(StrEnum):
    """What `renew` does when the staging CA cannot be reached."""

    FAIL = "fail"  # fail closed: no production order (the default)
    PROCEED = "proceed"  # go on unrehearsed, said loudly in the report


@dataclass(frozen=True)
class Staging:
    ca: CASpec
    state_dir: Path
    on_unreachable: Unreachable = Unreachable.FAIL
    remember_for: float = 30 * 86400.0  # a passing rehearsal stands this long; 0: never


@dataclass(frozen=True)
class CertSpec:
    name: str
    names: tuple[str, ...]
    key_type: KeyType
    challenge: ChallengeSpec
    deploy: DeploySpec | None = None
    staging: StagingTarget | None = None
    profile: str | None = None  # the CA's certificate profile to order
    reuse_key: bool = False  # renew with the current key instead of a new one
    failover_instance: str | None = None  # its keepalived instance (None: the default)
    # per name, instead of `challenge` (a wildcard by dns-01, its apex by http-01)
    challenges: Mapping[str, ChallengeSpec] = field(default_factory=dict)

    def challenge_for(self, name: str) -> ChallengeSpec:
        return self.challenges.get(name, self.challenge)


@dataclass(frozen=True)
class MonitorEndpoint:
    """An endpoint `certagent check` watches although we do not issue for it."""

    name: str
    endpoint: Endpoint
    starttls: str | None = None  # smtp, imap, postgres or ldap
    warning_days: float | None = None  # None: the monitor section's default
    critical_days: float | None = None
    trust_roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Monitor:
    warning_days: float = 14.0
    critical_days: float = 3.0
    # ... or at this share of the certificate's own lifetime left, if that is sooner
    warning_share: float = 1 / 3
    critical_share: float = 1 / 6
    timeout: float = 5.0
    max_renew_age: float | None = None  # seconds; CRITICAL when the last renew run is older
    trust_roots: tuple[Path, ...] = ()
    endpoints: tuple[MonitorEndpoint, ...] = ()


@dataclass(frozen=True)
class Webhook:
    url: str
    timeout: float = 10.0
    retries: int = 3  # attempts in all
    backoff: float = 2.0  # seconds before the 2nd attempt; doubled each time after
    trust_roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Email:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 20.0
    trust_roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Notify:
    """Failure, rollback, BROKEN, gate refusal and nearing expiry; each sent once, and
    once more when resolved."""

    expiry_days: float = 14.0
    webhook: Webhook | None = None
    email: Email | None = None


@dataclass(frozen=True)
class Heartbeat:
    """A dead man's switch: pinged after every completed renew run."""

    url: str
    timeout: float = 10.0
    trust_roots: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Peer:
    """The other keepalived node, reached through a command prefix (ssh, salt…)."""

    command: tuple[str, ...]  # e.g. (ssh, -o, BatchMode=yes, root@10.0.0.12)
    address: str  # its own address: TLS checks of its web server go here
    pid_file: str = "/run/keepalived.pid"
    dump_dir: str = "auto"  # keepalived's TMPDIR there (read from its environment), or /tmp
    certagent: tuple[str, ...] = ("certagent",)  # how to run certagent there
    quote: bool = True  # the prefix passes one string to a remote shell (ssh does)
    timeout: float = 300.0  # the whole deploy on the peer


class OnBackup(StrEnum):
    SKIP = "skip"  # renew on a BACKUP: nothing to do, exit 0
    FAIL = "fail"  # exit 1: this host was expected to be the MASTER


@dataclass(frozen=True)
class Keepalived:
    """failover.keepalived: this node's VRRP instance and its peer."""

    instance: str
    address: str  # this node's own address (not the VIP): where its web server is checked
    peer: Peer
    vips: tuple[str, ...] = ()  # bare addresses; checked against both nodes when given
    pid_file: str = "/run/keepalived.pid"
    dump_dir: str = "auto"  # keepalived's TMPDIR (read from its environment), or /tmp
    dump_timeout: float = 2.0  # keepalived must answer a dump signal within this
    max_advert_age: float | None = None  # None: three advert intervals, at least 1 s
    settle: float = 10.0  # after the peer took a release: its track scripts GOOD again within
    on_backup: OnBackup = OnBackup.SKIP
    # More VRRP instances on the same pair (one per VIP): name -> its VIPs. A
    # certificate names its own with `failover_instance`; the default is `instance`.
    instances: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def instance_of(self, spec: CertSpec) -> tuple[str, tuple[str, ...]]:
        """The VRRP instance a certificate follows, and that instance's VIPs."""
        name = spec.failover_instance or self.instance
        return name, self.vips if name == self.instance else tuple(self.instances[name])


@dataclass(frozen=True)
class Config:
    source: Path
    state_dir: Path
    ca: CASpec
    policy: Policy
    certificates: tuple[CertSpec, ...]
    template_dirs: tuple[Path, ...] = ()
    staging: Staging | None = None
    monitor: Monitor = field(default_factory=lambda: Monitor())
    metrics_textfile: Path | None = None
    notify: Notify = field(default_factory=lambda: Notify())
    heartbeat: Heartbeat | None = None
    failover: Keepalived | None = None
    state_group: int | None = None  # gid that may read certificates, keys and run state
    fallbacks: tuple[CASpec, ...] = ()  # the next CAs, in order, when `ca` cannot issue
    inputs: str = ""  # the files it was read from, as they were (store/quiet.py); "": text

    @property
    def cas(self) -> tuple[CASpec, ...]:
        """Every production CA, the preferred one first."""
        return (self.ca, *self.fallbacks)

    @property
    def directories(self) -> tuple[str, ...]:
        """The directory URLs of every production CA, the preferred one first."""
        return tuple(ca.directory for ca in self.cas)

    def certificate(self, name: str) -> CertSpec | None:
        return next((c for c in self.certificates if c.name == name), None)
