"""A keepalived pair: `failover.keepalived` and its `peer`."""

from __future__ import annotations

from pathlib import Path

from ..configkinds import (
    ARGV,
    HOUR,
    MINUTE,
    TIMEOUT,
    VRRP_NAME,
    AbsPath,
    Address,
    Bool,
    Choice,
    Duration,
    Either,
    Interface,
    Key,
    ListOf,
    MapOf,
    Section,
)

DUMP_DIR = Either("auto", AbsPath(), "`auto` or absolute path")

PEER = Section(
    Key(
        "command",
        ARGV,
        doc="a prefix that runs an argv on the peer: `[ssh, -o, "
        "BatchMode=yes, root@10.0.0.12]`, `salt-call`…",
        required=True,
    ),
    Key(
        "address",
        Address(),
        doc="the peer's own address: its web server is checked there",
        required=True,
    ),
    Key("pid_file", AbsPath(), Path("/run/keepalived.pid"), "the peer's keepalived pid file"),
    Key("dump_dir", DUMP_DIR, "auto", "the peer's keepalived `TMPDIR` (as below)"),
    Key(
        "certagent",
        ARGV,
        ("certagent",),
        "how to run certagent on the peer (add `-c FILE` if needed)",
    ),
    Key(
        "quote",
        Bool(),
        doc="hand the command over as one shell-quoted string (for a remote shell)",
        default_doc="`true` if the program is `ssh`",
    ),
    Key("timeout", TIMEOUT, 300.0, "the whole deploy on the peer"),
    text="mapping (below)",
)

KEEPALIVED = Section(
    Key("instance", VRRP_NAME, doc="this node's `vrrp_instance`", required=True),
    Key(
        "address",
        Address(),
        doc="this node's own address (not the VIP): `health`, and "
        "verification of this node, go here",
        required=True,
    ),
    Key("peer", PEER, doc="the other node", required=True),
    Key(
        "vips", ListOf(Interface()), (), "when given, this node's instance must carry exactly these"
    ),
    Key("pid_file", AbsPath(), Path("/run/keepalived.pid"), "keepalived's parent pid file (`-p`)"),
    Key(
        "dump_dir",
        DUMP_DIR,
        "auto",
        "keepalived's `TMPDIR`: where it writes "
        "`keepalived.json`/`.data`; `auto` reads it from the keepalived process's "
        "environment (else `/tmp`). Only dump files owned by keepalived's own user, not "
        "links, in a directory no one else can write (or a sticky one) are read; anything "
        "else is refused as planted. A root-only `TMPDIR` for keepalived is best "
        "(docs/keepalived.md)",
    ),
    Key(
        "dump_timeout",
        Duration(0, 5 * MINUTE, above=True),
        2.0,
        "keepalived must write a dump within this, or it counts as frozen",
    ),
    Key(
        "max_advert_age",
        Duration(0, HOUR, above=True),
        doc="the peer must have heard this node's advert within this",
        default_doc="3 advert intervals, at least 1 s",
    ),
    Key(
        "settle",
        Duration(0, 5 * MINUTE),
        10.0,
        "after the peer took a release, how long its track scripts may take to be GOOD "
        "again (its health check probes the server as it reloads) before this node "
        "refuses to swap; any other problem refuses at once",
    ),
    Key(
        "on_backup",
        Choice("skip", "fail"),
        "skip",
        "`renew` on the BACKUP: exit 0 and say so, or exit 1",
    ),
    Key(
        "instances",
        MapOf(
            r"[A-Za-z0-9_]{1,63}",
            Section(
                Key("vips", ListOf(Interface()), (), "the instance's VIPs"),
                text="`{vips: [...]}`",
            ),
            "`{NAME: {vips: [...]}}`",
            what="instance names",
            bad="not a keepalived instance name ([A-Za-z0-9_])",
        ),
        doc="further VRRP instances of "
        "the same pair (one per VIP, say); a certificate follows one with "
        "`failover_instance: NAME` (default: `instance`), is ordered by the node that is "
        "MASTER of that instance, gated on the peer's state in it, and judged by "
        "`certagent health --instance NAME` (one track script per instance)",
    ),
)
