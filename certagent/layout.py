"""Every name in the state directory: the one place that spells the layout, so that a
reader that must stay light (the keepalived track script) need not import the store.

    <state_dir>/lock                          one run at a time (flock)
    <state_dir>/history.jsonl                 the audit log
    <state_dir>/accounts/<ca-id>/             key.pem, account.json, hold.json,
                                              breaker.json, orders.jsonl, duplicates.jsonl
    <state_dir>/certs/<name>/current -> releases/<id>
    <state_dir>/certs/<name>/releases/<id>/   privkey.pem cert.pem chain.pem
                                              fullchain.pem bundle.pem meta.json
                                              rendered/<file>
    <state_dir>/certs/<name>/issued/          kept issuances, not yet staged
    <state_dir>/certs/<name>/state.json       what earlier runs left for the planner
    <state_dir>/certs/<name>/rehearsal.json   (staging) the last passing rehearsal
"""

from __future__ import annotations

import os
from pathlib import Path

CERTS = "certs"
CURRENT = "current"
RELEASES = "releases"
ISSUED = "issued"
STATE = "state.json"
REHEARSAL = "rehearsal.json"
META = "meta.json"
LOCK = "lock"
HISTORY = "history.jsonl"
LAST_RUNS = "last-runs.json"  # each command's last run (time, exit status), beside it
ACCOUNTS = "accounts"

# what a CA's folder (accounts/<ca-id>/) holds
ACCOUNT_KEY = "key.pem"
ACCOUNT = "account.json"
HOLD = "hold.json"  # the CA's Retry-After for every client
BREAKER = "breaker.json"  # the circuit breaker is open
NO_ARI = "no-ari.json"  # the CA offers no renewal information (checked again daily)
ORDERS = "orders.jsonl"  # new orders sent (the order budget), a line each
DUPLICATES = "duplicates.jsonl"  # certificates per set of names (the duplicate limit)
LEGACY_ORDERS = "orders.json"  # both as one JSON array (earlier builds): read once, removed
LEGACY_DUPLICATES = "duplicates.json"

# a release's files
KEY = "privkey.pem"
CERT = "cert.pem"
CHAIN = "chain.pem"
FULLCHAIN = "fullchain.pem"
BUNDLE = "bundle.pem"  # fullchain + key in one file, for haproxy and the like
RENDERED = "rendered"  # the release's rendered configs, rendered/<file>
SECRET_FILES = frozenset({KEY, BUNDLE})
CHECKED_FILES = (KEY, CERT, CHAIN, FULLCHAIN, BUNDLE)  # their SHA-256 is in meta.json


def cert_dir(state_dir: Path, name: str) -> Path:
    return state_dir / CERTS / name


def current_link(state_dir: Path, name: str) -> Path:
    return cert_dir(state_dir, name) / CURRENT


def deployed(state_dir: Path, name: str) -> bool:
    """Has the certificate ever gone live here (a `current` link, even a broken one)?"""
    return os.path.lexists(current_link(state_dir, name))
