"""From the CA's answer, or a certificate issued earlier, to a staged release: the order
itself (a slot of the account's budget, the key, the CSR, `replaces`), the issuance
kept at once before anything else can fail, and the release written whole (key 0600,
chain, bundle, rendered configs, metadata). Also a release staged again from an
earlier one (configs rendered afresh) and an issuance kept before staging.

Side effects: network (through the issuer), filesystem (the store).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from . import layout
from .errors import CABusy, CAUnavailable, CAUnreachable, CertagentError, OrderFailed
from .model import CertSpec, DeploySpec, OrderOptions, Release, Undeployed
from .steps import Steps
from .store import BUNDLE_FILE, KEY_FILE

if TYPE_CHECKING:
    from . import crypto
    from .context import Context

log = logging.getLogger(__name__)

class StageError(CertagentError):
    """The CA's answer cannot become a release (wrong key, missing names)."""


class Deferred(CertagentError):
    """The account's order budget is spent: ordered in a later run, not a failure."""

    def __init__(self, until: dt.datetime, limit: int) -> None:
        super().__init__(
            f"{limit} new orders were sent to this CA in the last window "
            f"(ca.max_new_orders): deferred to a run after {until:%Y-%m-%d %H:%M} UTC"
        )
        self.until = until


def order_and_stage(
    ctx: Context,
    spec: CertSpec,
    steps: Steps,
    current: Release | None = None,
    key_source: Release | None = None,
) -> Release:
    from . import crypto  # deferred: status and plan need no cryptography

    issuer = ctx.issuer
    if issuer is None:
        raise StageError("no CA is configured for this run")
    if ctx.budget is not None:  # a slot of the account's order budget is spent here
        until = ctx.budget.take(ctx.clock.now())
        if until is not None:
            raise Deferred(until, ctx.budget.limit)
    with steps.step("order", issuer.label) as notes:
        notes.append(ctx.store.check_writable(spec.name, _min_free(spec)))
        ctx.progress(spec.name, "ordering")
        key = _order_key(spec, key_source, notes)
        csr = crypto.make_csr(key, spec.names)
        with ctx.order_slots:
            fullchain, label, skipped = _issue(ctx, spec, csr, current, notes)
        if ctx.duplicates is not None:
            ctx.duplicates.record(spec.names, ctx.clock.now())
        # Kept before anything else can fail: a stage that fails or a kill from here on
        # leaves it for the next run, which stages it instead of ordering again.
        kept = ctx.store.keep_issued(spec.name, crypto.key_pem(key), fullchain, label,
                                     _facts_of(fullchain, spec))  # fmt: skip
    with steps.step("stage") as notes:
        release = stage(ctx, spec, key, fullchain, label, skipped)
        ctx.store.forget_issued(kept)
        notes.append(
            f"release {release.release_id}, valid until {release.not_after:%Y-%m-%d %H:%M}"
        )
    return release


# What makes a CA unusable for this order while another may issue it: the problem
# types of a refusal that is about this CA (its policy, its limits, its CAA), not the
# names' validation, which would fail the same way anywhere.
FALL_BACK_ON = (":rejectedIdentifier", ":unsupportedIdentifier", ":rateLimited",
                ":invalidProfile", ":caa")  # fmt: skip


def fallback_reason(exc: OrderFailed) -> str | None:
    """Why the next CA may be tried after this error, or None (the error stands)."""
    if isinstance(exc, CAUnavailable | CAUnreachable | CABusy):
        return str(exc)
    if exc.code == "profile" or (exc.problem_type or "").endswith(FALL_BACK_ON):
        return str(exc)
    if exc.status is not None and exc.status >= 500:
        return str(exc)
    return None


def _issue(
    ctx: Context, spec: CertSpec, csr: bytes, current: Release | None, notes: list[str]
) -> tuple[bytes, str, str | None]:
    """The full chain, the CA that issued it and why the ones before it were skipped:
    the preferred CA, else the next usable one (`config.fallbacks`), the order step
    saying why each before it was skipped.
    `replaces` goes only to the CA that issued the certificate replaced; a certificate's
    own profile is ordered at the preferred CA, a fallback orders its own. When none can
    issue, the error that says most stands (a real refusal over an outage, the first CA
    asked over one not asked), with the others' after it."""
    assert ctx.issuer is not None  # noqa: S101 - checked by the caller
    replaced = (current.path / layout.CERT).read_bytes() if current is not None else None
    issuers = (ctx.issuer, *ctx.fallbacks)
    cas = ctx.config.cas
    failed: list[tuple[str, OrderFailed]] = []
    for i, issuer in enumerate(issuers):
        ca = cas[i] if i < len(cas) else ctx.config.ca
        profile = (spec.profile or ca.profile) if i == 0 else ca.profile
        same = current is not None and current.ca in ("", issuer.label)
        options = OrderOptions(profile, replaced if same else None)
        try:
            fullchain = issuer.issue(csr, ctx.solvers.chooser(spec), options)
        except OrderFailed as exc:
            if not failed and (len(issuers) == 1 or fallback_reason(exc) is None):
                raise  # nothing to fall back to, or another CA would refuse it too
            failed.append((issuer.label, exc))
            if fallback_reason(exc) is None:
                break
            log.warning("%s: not ordered from %s: %s", spec.name, issuer.label, exc)
            continue
        skipped = "; ".join(f"{label}: {exc}" for label, exc in failed) or None
        if skipped:
            notes.append(f"ordered from {issuer.label}, not the preferred CA: skipped {skipped}")
        return fullchain, issuer.label, skipped
    last = failed[-1][1]
    asked = [exc for _, exc in failed if not isinstance(exc, CAUnavailable)]
    stands = last if fallback_reason(last) is None else (asked or [failed[0][1]])[0]
    stands.notes.extend(f"also {label}: {exc}" for label, exc in failed if exc is not stands)
    raise stands


def _facts_of(fullchain: bytes, spec: CertSpec) -> dict[str, object]:
    """What plan and status say of a kept issuance (store.keep_issued), or nothing when
    the chain does not parse (staging will say why)."""
    from . import crypto  # deferred: status and plan need no cryptography

    try:
        facts = crypto.facts(crypto.split_pem_chain(fullchain)[0])
    except (ValueError, IndexError):
        return {}
    return {"names": list(facts.names), "key_type": spec.key_type.value,
            "not_before": facts.not_before.isoformat(),
            "not_after": facts.not_after.isoformat(), "profile": spec.profile}  # fmt: skip


def _order_key(spec: CertSpec, current: Release | None, notes: list[str]) -> crypto.PrivateKey:
    """A new key, unless `reuse_key` asks for the current one (same type, readable)."""
    from . import crypto  # deferred: status and plan need no cryptography

    if spec.reuse_key and current is not None and current.key_type == spec.key_type:
        try:
            key = crypto.load_key((current.path / KEY_FILE).read_bytes())
        except (OSError, ValueError) as exc:
            notes.append(f"a new key: the current one is unusable ({exc})")
        else:
            notes.append(f"reusing the key of release {current.release_id} (reuse_key)")
            return key
    return crypto.generate_key(spec.key_type)


def kept_issuance(ctx: Context, spec: CertSpec, steps: Steps) -> Release | None:
    """A certificate an earlier run was issued but never staged (a stage that failed, a
    kill): staged now instead of a new order, if it still fits the spec and is far from
    expiry. Unusable ones are left on disk for the operator, never deleted here."""
    from . import crypto  # deferred: status and plan need no cryptography

    now = ctx.clock.now()
    for kept in ctx.store.issued(spec.name):  # newest first
        try:
            key = crypto.load_key(kept.key_pem)
            chain = crypto.split_pem_chain(kept.fullchain)
            facts = crypto.facts(chain[0])
        except (ValueError, IndexError):
            continue
        fits = set(facts.names) >= set(spec.names) and crypto.key_type_of(key) == spec.key_type
        fits = fits and kept.ca in ("", *(ca.directory for ca in ctx.config.cas))
        life = facts.not_after - facts.not_before
        fresh = facts.not_after - now > life / 3 and facts.not_before <= now + dt.timedelta(
            minutes=5
        )
        if not (fits and fresh and crypto.key_matches(key, chain[0])):
            continue
        with steps.step("stage", f"from {kept.path.name}, issued earlier and kept: no new order"):
            release = stage(ctx, spec, key, kept.fullchain, kept.ca)
            ctx.store.forget_issued(kept.path)
        return release
    return None


def restage(ctx: Context, spec: CertSpec, old: Release, steps: Steps) -> Release:
    """The same key and certificate as a new release, with configs rendered afresh."""
    from . import crypto  # deferred: status and plan need no cryptography

    with steps.step("stage", f"re-staged from {old.release_id}, no new order") as notes:
        key = crypto.load_key((old.path / KEY_FILE).read_bytes())
        fullchain = (old.path / layout.FULLCHAIN).read_bytes()
        release = stage(ctx, spec, key, fullchain, old.ca)
        notes.append(f"release {release.release_id}")
    return release


def stage(
    ctx: Context,
    spec: CertSpec,
    key: crypto.PrivateKey,
    fullchain: bytes,
    ca: str,
    skipped: str | None = None,
) -> Release:
    """Check what the CA sent against what we asked for, then write one immutable release."""
    from . import crypto  # deferred: status and plan need no cryptography

    try:
        chain = crypto.split_pem_chain(fullchain)
    except ValueError as exc:
        raise StageError(f"the CA sent an unreadable certificate chain: {exc}") from exc
    if not chain:
        raise StageError("the CA sent no certificate")
    leaf = chain[0]
    if not crypto.key_matches(key, leaf):
        raise StageError("the CA's certificate does not match our key")
    facts = crypto.facts(leaf)
    missing = set(spec.names) - set(facts.names)
    if missing:
        raise StageError(f"the CA's certificate lacks {', '.join(sorted(missing))}")
    release_id = f"{ctx.clock.now():%Y%m%dT%H%M%S%fZ}-{facts.fingerprint_sha256[:8]}"
    meta = {
        "names": list(spec.names),
        "key_type": spec.key_type.value,
        "not_before": facts.not_before.isoformat(),
        "not_after": facts.not_after.isoformat(),
        "fingerprint_sha256": facts.fingerprint_sha256,
        "issuer": facts.issuer,
        "serial": format(facts.serial, "x"),
        "ca": ca,
        "profile": spec.profile,
        **({"skipped": skipped[:600]} if skipped else {}),
    }
    key_pem = crypto.key_pem(key)
    files = {
        KEY_FILE: key_pem,
        layout.CERT: leaf,
        layout.CHAIN: b"".join(chain[1:]),
        layout.FULLCHAIN: b"".join(chain),
        BUNDLE_FILE: b"".join(chain) + key_pem,
    }
    release_dir = ctx.store.cert_dir(spec.name) / layout.RELEASES / release_id
    from .deploy import render_configs

    files.update(
        render_configs(
            spec,
            release_dir,
            ctx.store.current_link(spec.name),
            ctx.config.template_dirs,
            ctx.deployer.stage,
        )
    )
    try:
        ctx.store.write_release(spec.name, files, meta, release_id)
    except OSError as exc:  # ENOSPC, EIO: nothing half-written stays (write_release)
        raise StageError(
            f"cannot write release {release_id}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else "")
        ) from exc
    return ctx.store.release(spec.name, release_id)


def _min_free(spec: CertSpec) -> int:
    return spec.deploy.min_free_bytes if spec.deploy is not None else DeploySpec().min_free_bytes


def stage_kept(ctx: Context, spec: CertSpec, kept: Undeployed, steps: Steps) -> Release:
    """A certificate issued earlier as a new release (configs rendered afresh): from
    the release whose deploy failed, or from the issuance kept before staging."""
    if kept.staged:
        old = ctx.store.find(spec.name, kept.ref)
        if old is None:
            raise StageError(f"release {kept.ref} is gone or unreadable")
        return restage(ctx, spec, old, steps)
    from . import crypto  # deferred: status and plan need no cryptography

    for issued in ctx.store.issued(spec.name):
        if issued.path.name != kept.ref:
            continue
        with steps.step("stage", f"from {kept.ref}, issued earlier and kept: no new order"):
            try:
                key = crypto.load_key(issued.key_pem)
            except ValueError as exc:
                raise StageError(f"the kept issuance {issued.path} has no usable key") from exc
            release = stage(ctx, spec, key, issued.fullchain, issued.ca)
            ctx.store.forget_issued(issued.path)
        return release
    raise StageError(f"the kept issuance {kept.ref} is gone")


