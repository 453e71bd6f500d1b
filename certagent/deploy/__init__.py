"""Deploy staged releases: one flow for a certificate alone or for a group sharing a
web server (flow.py), in parts by what each does:

    configs.py   the configs a release carries, rendered from the templates
    gate.py      every reason not to swap, and one config test with the candidates in view
    view.py      what the config test and the server's user see
    links.py     the destinations as links through `current`; the swap and its undoing
    reload.py    the post-run hook, or haproxy's runtime API (haproxy.py)
    hooks.py     the operator's commands as they run: argv, environment
    ports.py     what the flow is given (runner, prober, a peer's step) and a `Member`

A keepalived node's part (the peer's readiness, the hand-over) is a `Peer` injected
into the flow (failover.FailoverPeer), not a kind of deployer.
"""

from .configs import render_configs
from .flow import Deployer
from .links import BACKUP_SUFFIX, link_dest
from .ports import DeployFailed, Member, NoPeer, Peer, Prober, Runner
from .view import unreadable_by

__all__ = [
    "BACKUP_SUFFIX",
    "DeployFailed",
    "Deployer",
    "Member",
    "NoPeer",
    "Peer",
    "Prober",
    "Runner",
    "link_dest",
    "render_configs",
    "unreadable_by",
]
