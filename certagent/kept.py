"""What the store says was issued and is not live, and what the CA asked of every
client: read for `renew`, `deploy`, `plan`, `status` and `check`, so each says the same.

A certificate issued for a certificate spec that is not live (its deploy failed, or it
was kept before it could be staged) is deployed instead of ordering a new one: it needs
no CA, so neither the CA's back-off nor its Retry-After applies to it.

Side effects: none (reads the store; imports cryptography only for an issuance kept
by an older version without its facts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from .model import CertSpec, CertState, KeyType, Release, Undeployed
from .store import Store, release_time


def undeployed(
    store: Store, spec: CertSpec, state: CertState, cas: tuple[str, ...]
) -> Undeployed | None:
    """The newest certificate the CA issued for `spec` that is not live: the release
    whose deploy failed, else (after a failure) an issuance kept before it was staged.
    Only one from a configured CA counts. Cheap: nothing is read for a certificate
    whose last attempt did not fail."""
    why = state.last_error or "its deploy failed"
    if state.failed_release is not None:
        rel = store.find(spec.name, state.failed_release)
        if rel is not None and rel.ca in ("", *cas):
            return as_undeployed(rel, why)
    if state.consecutive_failures == 0:
        return None
    for kept in store.issued(spec.name):  # newest first
        found = _issued_facts(kept.facts, kept.fullchain, kept.key_pem)
        if found is not None and kept.ca in ("", *cas):
            names, key_type, not_before, not_after, profile = found
            issued = kept.issued or not_before
            return Undeployed(kept.path.name, False, issued, names, key_type, not_before,
                              not_after, profile, kept.ca, why)  # fmt: skip
    return None


def _issued_facts(
    facts: Mapping[str, object], fullchain: bytes, key_pem: bytes
) -> tuple[tuple[str, ...], KeyType, dt.datetime, dt.datetime, str | None] | None:
    """Names, key type, validity and profile of a kept issuance: from the facts written
    beside it, else (kept by an older version) parsed. None when it is unusable."""
    try:
        names = facts["names"]
        if not isinstance(names, list):
            raise TypeError
        profile = facts.get("profile")
        return (tuple(str(n) for n in names), KeyType(str(facts["key_type"])),
                dt.datetime.fromisoformat(str(facts["not_before"])),
                dt.datetime.fromisoformat(str(facts["not_after"])),
                str(profile) if isinstance(profile, str) else None)  # fmt: skip
    except (KeyError, TypeError, ValueError):
        pass
    from . import crypto  # deferred: an old kept issuance only

    try:
        leaf = crypto.split_pem_chain(fullchain)[0]
        info = crypto.facts(leaf)
        key_type = crypto.key_type_of(crypto.load_key(key_pem))
    except (ValueError, IndexError, TypeError):
        return None
    if key_type is None:
        return None
    return tuple(info.names), key_type, info.not_before, info.not_after, None


def ca_hold(
    store: Store, cas: tuple[str, ...], now: dt.datetime
) -> tuple[dt.datetime, str] | None:
    """The CAs' Retry-After for every client while it holds at every one of them (one
    that does not hold can still issue): until the first ends, and why (castate.py)."""
    from .castate import read_hold

    holds = [read_hold(store.account_path(ca), now) for ca in cas]
    found = [h for h in holds if h is not None]
    if not found or len(found) < len(holds):
        return None
    return min(found, key=lambda h: h[0])


def as_undeployed(release: Release, reason: str) -> Undeployed:
    issued = release_time(release.release_id) or release.not_before
    return Undeployed(release.release_id, True, issued, release.names, release.key_type,
                      release.not_before, release.not_after, release.profile, release.ca,
                      reason)  # fmt: skip
