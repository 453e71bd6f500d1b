"""What is checked before anything is sent to a CA for a certificate: an issuance is
precious (public CAs allow about 5 duplicates a week), so all that would make one
unusable is found first: templates, directories and webroots, the CA's duplicate limit,
the challenge listeners, and the web server's config test of the configuration this
certificate would deploy, rendered against the live certificate. Hooks are not run.

Side effects: filesystem (a scratch release under <state_dir>/probe, removed again),
subprocesses (the config test, through the deployer), sockets (listeners bound for the
run).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import layout
from .errors import CertagentError
from .model import CertSpec, CertState, Http01Webroot, Release
from .steps import Steps
from .store import BUNDLE_FILE, KEY_FILE, Store

if TYPE_CHECKING:
    from .context import Context


class PrecheckFailed(CertagentError):
    """Something that would fail after the order was found before it: nothing ordered."""

    code = "precheck"


class DuplicateLimit(CertagentError):
    """One more certificate for these names would pass the CA's duplicate limit."""

    code = "duplicate-limit"


def precheck(
    spec: CertSpec, template_dirs: Sequence[Path], store: Store, stage: str = "production"
) -> list[str]:
    """What would make an issued certificate unusable, found without the CA: templates
    that are missing, broken or use an undefined variable (rendered with a placeholder
    release), destination directories and a webroot that do not exist."""
    problems = []
    for challenge in dict.fromkeys((spec.challenge, *spec.challenges.values())):
        if isinstance(challenge, Http01Webroot) and not challenge.webroot.is_dir():
            problems.append(f"the webroot {challenge.webroot} does not exist")
    if spec.deploy is not None:
        for dest, _ in spec.deploy.placements():
            if not dest.parent.is_dir():
                problems.append(f"the directory of {dest} does not exist")
        placeholder = store.cert_dir(spec.name) / layout.RELEASES / "PLACEHOLDER"
        try:
            from .deploy import render_configs  # deferred: status and plan need no deployer

            render_configs(spec, placeholder, store.current_link(spec.name), template_dirs, stage)
        except CertagentError as exc:
            problems.append(str(exc))
    return problems


def before_ordering(
    ctx: Context,
    spec: CertSpec,
    current: Release | None,
    steps: Steps,
    pretested: tuple[bool, str | None] = (False, None),
) -> None:
    """All that would make an issuance unusable, found before anything is sent to a CA
    (public CAs allow ~5 duplicates a week): templates, directories and webroots
    (`precheck`), the CA's duplicate limit, the challenge listeners (bound now, held for
    the run), and the web server's config test of the candidate configuration rendered
    against the live certificate (`pretest`; `pretested`: it ran already, with this
    result, with the others sharing its web server). Hooks are not run. Raises
    PrecheckFailed or DuplicateLimit."""
    with steps.step("precheck") as notes:
        problems = precheck(spec, ctx.config.template_dirs, ctx.store, ctx.deployer.stage)
        if problems:
            raise PrecheckFailed("not ordering: " + "; ".join(problems))
        if ctx.duplicates is not None and ctx.duplicates.enforce:
            when = ctx.duplicates.next_allowed(spec.names, ctx.clock.now())
            if when is not None:
                raise DuplicateLimit(
                    f"not ordering: {ctx.duplicates.limit} certificates for exactly these "
                    f"names were issued by this CA in the last "
                    f"{ctx.duplicates.window.days} days (ca.max_duplicates); the next is "
                    f"possible after {when:%Y-%m-%d %H:%M} UTC (`renew --allow-duplicate` "
                    "overrides)"
                )
        try:
            bound = ctx.solvers.bind(spec)
        except CertagentError as exc:
            raise PrecheckFailed(f"not ordering: {exc}") from exc
        notes.extend(bound)
        ran, failed = pretested
        if not ran:
            failed = pretest(ctx, spec, current)
        if failed is not None:
            raise PrecheckFailed(f"not ordering: config test failed: {failed}")
        if spec.deploy is not None and spec.deploy.test is not None:
            notes.append("config test of the candidate configuration passed")


def pretest(ctx: Context, spec: CertSpec, current: Release | None) -> str | None:
    """The config test, before ordering, of the configuration this certificate would
    deploy. None when it passes or there is none, else the server's words."""
    return pretest_many(ctx, [(spec, current)], lambda _spec: None)[spec.name]


def pretest_many(
    ctx: Context,
    items: Sequence[tuple[CertSpec, Release | None]],
    key: Callable[[CertSpec], object],
) -> dict[str, str | None]:
    """The config test before ordering for many certificates: each one's candidate
    rendered into a scratch release holding its live key and certificate (before the
    first issuance, a throwaway self-signed one for the same names), seen by the test in
    the same view as preflight's. Those that share a web server (`key`: the deploy
    group; None: alone) are tested together, once, and culprits found as a group deploy
    finds them. Name -> why its test failed, or None (passed, or no test)."""
    from .deploy import Member

    out: dict[str, str | None] = {spec.name: None for spec, _ in items}
    tests = [(spec, current) for spec, current in items
             if spec.deploy is not None and spec.deploy.test is not None]  # fmt: skip
    if not tests:
        return out
    root = ctx.store.root / "probe"
    shutil.rmtree(root, ignore_errors=True)
    try:
        groups: dict[object, list[Member]] = {}
        for i, (spec, current) in enumerate(tests):
            probe = _probe(ctx, spec, current, root / str(i))
            member = Member(spec, probe, None, CertState(), Steps(ctx.clock))
            group = key(spec)
            groups.setdefault(("alone", i) if group is None else group, []).append(member)
        for members in groups.values():
            if len(members) == 1:
                result = ctx.deployer.gate.test_candidates([(members[0].spec, members[0].release)])
                out[members[0].spec.name] = None if result.ok else result.explain()
                continue
            _, refused = ctx.deployer.gate.tested(members)
            for m in members:
                why = refused.get(id(m))
                out[m.spec.name] = why.removeprefix("config test failed: ") if why else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def _probe(ctx: Context, spec: CertSpec, current: Release | None, scratch: Path) -> Release:
    """A scratch release for the config test: never activated, removed after it."""
    from . import crypto  # deferred: status and plan need no cryptography
    from .deploy import render_configs
    from .store import make_private_dir

    make_private_dir(scratch)
    try:
        key_pem = (current.path / KEY_FILE).read_bytes() if current else b""
        chain = (current.path / layout.FULLCHAIN).read_bytes() if current else b""
    except OSError:
        key_pem = chain = b""
    if not key_pem or not chain:
        key = crypto.generate_key(spec.key_type)
        key_pem = crypto.key_pem(key)
        chain = crypto.placeholder_certificate(key, spec.names)
    certs = crypto.split_pem_chain(chain)
    files = {KEY_FILE: key_pem, layout.CERT: certs[0], layout.CHAIN: b"".join(certs[1:]),
             layout.FULLCHAIN: chain, BUNDLE_FILE: chain + key_pem}  # fmt: skip
    files.update(render_configs(spec, scratch, ctx.store.current_link(spec.name),
                                ctx.config.template_dirs, ctx.deployer.stage))  # fmt: skip
    for rel, data in files.items():
        path = scratch / rel
        make_private_dir(path.parent)
        mode = 0o600 if rel in (KEY_FILE, BUNDLE_FILE) else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    facts = crypto.facts(certs[0])
    return Release(spec.name, f"probe-{scratch.name}-{spec.name}", scratch, spec.names,
                   spec.key_type, facts.not_before, facts.not_after, facts.fingerprint_sha256,
                   facts.issuer)  # fmt: skip
