"""The sections of one certificate: `certificates.NAME` (challenge, deploy, staging
target)."""

from __future__ import annotations

from ..configkinds import (
    HOUR,
    NET_TIMEOUT,
    PATHS,
    PORT,
    STARTTLS,
    VRRP_NAME,
    AbsPath,
    Address,
    Bool,
    Choice,
    Count,
    Duration,
    Either,
    Free,
    HostPort,
    Key,
    ListOf,
    MapOf,
    Names,
    RelPath,
    Section,
    Text,
    User,
    Word,
)
from ..model import KeyType
from .common import COMMAND, DEPLOY_ENDPOINTS, ENDPOINTS, ROOTS_DOC

RFC2136 = Section(
    Key("server", Address(), doc="the primary server that takes the updates", required=True),
    Key("port", PORT, 53, "its port"),
    Key(
        "tsig_key_file",
        AbsPath(),
        doc='the TSIG key, in BIND\'s format (`tsig-keygen NAME > FILE`): `key "NAME" { '
        'algorithm hmac-sha256; secret "..."; };` (hmac-sha1 to hmac-sha512 and hmac-md5 '
        "accepted); a root-only file; the secret is never printed",
        required=True,
    ),
    Key(
        "zone",
        Word("DNS name"),
        doc="the zone to update; found from the SOA that answers for each record when "
        "not given (CNAMEs followed first)",
        default_doc="from the SOA",
    ),
    text="`{server, port, tsig_key_file, zone}`",
)

CHALLENGE = Section(
    Key(
        "type",
        Choice("http-01", "dns-01", "dns-persist-01", "tls-alpn-01", what="challenge type"),
        doc="the validation method: `http-01` (`webroot` or `standalone`), `dns-01` "
        "(`rfc2136` or `hook`), `dns-persist-01` (a standing `_validation-persist` TXT "
        "record naming the CA and the account, published once by you: `certagent account "
        "show` prints it; no DNS credentials here; draft-ietf-acme-dns-persist) or "
        "`tls-alpn-01` "
        "(`standalone`: certagent's own TLS listener answering the `acme-tls/1` protocol, "
        "RFC 8737, usually on port 443 while no web server holds it)",
        required=True,
    ),
    Key(
        "webroot",
        AbsPath(),
        doc="write `/.well-known/acme-challenge/<token>` under this "
        "directory, which the web server serves. It must exist (a missing one is an error, "
        "never created); `.well-known` and `acme-challenge` are created if missing, and no "
        "symlink below the webroot is ever followed (the web server's user may own it)",
    ),
    Key(
        "standalone",
        Section(
            Key(
                "address",
                Word(),
                "0.0.0.0",  # noqa: S104 - ACME validators come from anywhere
                "listen here for http-01 while validations are pending",
            ),
            Key("port", PORT, doc="… on this port (80 unless a proxy forwards)", required=True),
            text="`{address, port}`",
        ),
        doc="answer http-01 (or tls-alpn-01) from certagent's own listener: `address` "
        "(default `0.0.0.0`) and `port` (required; 80 for http-01, 443 for tls-alpn-01, "
        "unless a proxy forwards); a port in use is an error naming it",
    ),
    Key(
        "rfc2136",
        RFC2136,
        doc="dns-01 through RFC 2136 dynamic updates signed with TSIG (below): the TXT "
        "records of an order are added in one update per zone, waited for once, and "
        "removed in one update; records a killed run left are removed by the next",
    ),
    Key(
        "hook",
        COMMAND,
        doc="dns-01 through your own program, for any DNS provider: run without a shell as "
        "`ARGV present FQDN VALUE` and `ARGV cleanup FQDN VALUE`, with `CERTAGENT_DNS_ACTION`, "
        "`_FQDN`, `_VALUE`, `_DOMAIN` and `_ZONE` in its environment (the shape of lego's "
        "exec provider), within the command's timeout; a non-zero exit fails the order",
    ),
    Key(
        "nameservers",
        ListOf(HostPort(), "list of `host:port`"),
        (),
        "dns-01: the servers that must all serve every record before the CA is asked",
        default_doc="the zone's NS records (port 53)",
    ),
    Key(
        "resolver",
        HostPort(),
        doc="dns-01: the server asked for CNAMEs, zones (SOA) and NS records",
        default_doc="`rfc2136.server`, for a hook the system's resolver",
    ),
    Key(
        "propagation_timeout",
        Duration(0, HOUR, above=True),
        120.0,
        "dns-01: how long every record may take to reach every authoritative server; the "
        "error names the server that lacks it",
    ),
    Key("ttl", Count(1, 86400), 60, "dns-01: the TTL of the TXT records"),
    Key(
        "issuer",
        Word("DNS name"),
        doc="dns-persist-01: the CA's issuer domain name the record names (one of the "
        "`issuer-domain-names` its challenge offers)",
        default_doc="the first the CA offers",
    ),
    Key(
        "persist_until",
        Count(1, 2**33),
        doc="dns-persist-01: the record's `persistUntil` (Unix time; the CA stops "
        "accepting the record then): an order after it is refused before the CA is asked",
        default_doc="none: the record holds until you remove it",
    ),
    one_of=(("webroot",), ("standalone",), ("rfc2136",), ("hook",), ()),
)

TEMPLATE = Section(
    Key("template", RelPath(), doc="a path relative to the template directories", required=True),
    Key("dest", AbsPath(), doc="the live path", required=True),
    text="`{template, dest}`",
)

LINK_FILES = ("bundle", "fullchain", "key", "cert", "chain")

LINK = Section(
    Key(
        "file",
        Choice(*LINK_FILES, what="release file"),
        doc="`bundle` (chain + key in one file, what haproxy loads), `fullchain`, `key`, "
        "`cert` or `chain`",
        required=True,
    ),
    Key("dest", AbsPath(), doc="the live path", required=True),
    text="`{file, dest}`",
)

DEPLOY = Section(
    Key(
        "templates",
        ListOf(TEMPLATE, "list of `{template, dest}`"),
        (),
        "`template`: a "
        "path relative to the template directories; `dest`: an absolute path that becomes a "
        "symlink through the certificate's `current` link (an existing file there is kept "
        "as `<dest>.certagent-orig`)",
    ),
    Key(
        "links",
        ListOf(LINK, "list of `{file, dest}`"),
        (),
        "files of the release put in place as they are, without a template: `dest` "
        "becomes a symlink through the certificate's `current` link, so it flips with the "
        "rest (e.g. `{file: bundle, dest: /etc/haproxy/certs/www.pem}` for a haproxy "
        "`bind ... crt /etc/haproxy/certs/`: the operator's haproxy.cfg stays theirs)",
    ),
    Key(
        "haproxy_socket",
        AbsPath(),
        doc="haproxy's admin stats socket (`stats socket PATH level admin`): the `bundle` "
        "files of `links` that haproxy already serves are replaced in place over its "
        "runtime API (`set ssl cert` + `commit ssl cert`), with no reload; a new "
        "certificate, or any refusal, falls back to `hook` (a reload)",
    ),
    Key("vars", Free(), {}, "available in templates as `vars`"),
    Key(
        "test",
        COMMAND,
        doc="the config-test gate, run on the candidate before anything "
        "live changes; `{config}` is the first rendered file inside the new release, "
        "`{release}` the release directory, `{name}` the certificate name. As root it runs "
        "in a private mount namespace where every `dest` shows the candidate (the live file "
        "bind-mounted over, or a new file added to a copy of its directory), so a plain "
        "`nginx -t`, `apachectl configtest` or `haproxy -c -f /etc/haproxy/haproxy.cfg` "
        "tests the main config with the new fragments; nothing outside that namespace "
        "changes. Without root it sees the live files",
    ),
    Key(
        "hook",
        COMMAND,
        doc="the post-run hook (reload), run after the swap and again after a rollback",
    ),
    Key(
        "user",
        User(),
        doc="preflight checks that this user can enter every directory and "
        "read the key, chain and rendered files (not needed for nginx, haproxy and apache, "
        "whose master process reads keys as root)",
    ),
    Key(
        "endpoints",
        Either("none", DEPLOY_ENDPOINTS),
        doc="verified after the swap: a TLS "
        "handshake with SNI (default SNI: the first name), chain and hostname checked, leaf "
        "SHA-256 equal to the new release's, three handshakes in a row. `starttls`: "
        f"{', '.join(STARTTLS)} (a database or mail server is verified and watched through "
        "its STARTTLS opening). An empty list is an error; `endpoints: none` (with "
        "`endpoints_reason`) says why nothing can be probed, and `check` reports such a "
        "certificate as UNKNOWN (unwatched), never OK",
        default_doc="each name on 443",
    ),
    Key("endpoints_reason", Text(), doc="why `endpoints` is `none`"),
    Key(
        "verify_timeout",
        NET_TIMEOUT,
        10.0,
        "deadline for each endpoint to serve the new certificate",
    ),
    Key("trust_roots", PATHS, (), ROOTS_DOC),
    Key(
        "group",
        Bool(),
        True,
        "deploy together with the other certificates due in the same run that have the "
        "same `test` and `hook` (one web server): candidates staged, one config test with "
        "all of them in view, all swapped, one reload, every endpoint verified at once; "
        "if any fails, every member is rolled back with one reload, and those that did "
        "not fail are deployed again without it. The group's hook and test see "
        "`CERTAGENT_GROUP` (the names) and the first member's own variables. A test or "
        "hook with a placeholder (`{config}`, `{release}`, `{name}`), or a `shell` text "
        "reading one certificate's variables (`$CERTAGENT_FULLCHAIN`, `$RENEWED_LINEAGE`, "
        "...), runs per certificate and is never grouped; set `false` for a hook script "
        "that must run once per certificate. On a keepalived pair the peer takes the "
        "whole group first, in one `receive`",
    ),
    Key(
        "min_free_mb",
        Count(1, 1 << 24),
        16,
        "preflight fails with less free space under `state_dir`",
    ),
)

STAGING_TARGET = Section(
    Key(
        "dir",
        AbsPath(),
        doc="each template renders here under its production file name "
        "(and becomes a link into the staging release); must not be a production file's "
        "directory",
        required=True,
    ),
    Key(
        "vars",
        Free(),
        {},
        'laid over `deploy.vars` (e.g. other ports); templates also see `stage == "staging"`',
    ),
    Key(
        "test",
        Either("none", COMMAND),
        doc="the staging config test (`{config}` is the "
        "staging candidate); `none` (with `reason`) rehearses without one",
        default_doc="required when `deploy.test` is set",
    ),
    Key(
        "hook",
        Either("none", COMMAND),
        doc="the staging hook, e.g. a reload of a staging "
        "web server instance; `none` (with `reason`) rehearses without one. Otherwise the "
        "production hook would never be rehearsed",
        default_doc="required when `deploy.hook` is set",
    ),
    Key(
        "reason",
        Text(),
        doc="why a `test` or `hook` is `none`; kept in the config for the next reader",
    ),
    Key("user", User(), doc="as `deploy.user`, for the staging files"),
    Key(
        "endpoints",
        ENDPOINTS,
        (),
        "verified after the staging swap; must not be "
        "production endpoints. Without endpoints the rehearsal cannot verify what is "
        "served; give at least one",
    ),
    Key("verify_timeout", NET_TIMEOUT, 10.0, "deadline for each staging endpoint"),
    Key(
        "trust_roots",
        PATHS,
        (),
        "roots for verifying the staging endpoint",
        default_doc="the staging CA's `trust_roots`",
    ),
    Key(
        "challenge",
        CHALLENGE,
        doc="e.g. step-ca validates http-01 on port 80 of the name, always",
        default_doc="the certificate's",
    ),
    text="mapping (below)",
)

CERTIFICATE = Section(
    Key(
        "names",
        Names(),
        doc="the certificate's subject alternative names; the first is "
        "also the CN. Lower-cased; duplicates, and names already in another certificate, "
        "are errors",
        required=True,
    ),
    Key(
        "key_type",
        Choice(*(k.value for k in KeyType), what="key type"),
        KeyType.EC_P256.value,
        "a new key is generated for every release (unless `reuse_key`)",
    ),
    Key(
        "reuse_key",
        Bool(),
        False,
        "renew with the current release's key (for pinning "
        "setups); a new one when the key type changes",
    ),
    Key(
        "failover_instance",
        VRRP_NAME,
        doc="the VRRP instance whose VIP serves this "
        "certificate (see `failover.keepalived.instances`)",
        default_doc="`failover.keepalived.instance`",
    ),
    Key(
        "profile",
        Word(),
        doc="the ACME profile to order (one of the directory's "
        "`meta.profiles`; an unknown one is an error naming those offered); changing it "
        "orders a new certificate",
    ),
    Key("challenge", CHALLENGE, doc="how the CA validates the names (below)", required=True),
    Key(
        "challenges",
        MapOf(
            r"(\*\.)?[A-Za-z0-9.-]{1,253}",
            CHALLENGE,
            "mapping name → challenge",
            what="names of this certificate to challenges",
            bad="not a DNS name",
        ),
        {},
        "a different challenge for some of the names, e.g. dns-01 for `*.example.com` and "
        "http-01 for `example.com`; each must be one of `names`; the others use `challenge`",
    ),
    Key(
        "deploy",
        DEPLOY,
        doc="what a new release is deployed to (below)",
        default_doc="none: a new release only becomes `current`",
    ),
    Key(
        "staging",
        Either(False, STAGING_TARGET),
        doc="the rehearsal target (below); `false` deploys this certificate unrehearsed",
    ),
)
