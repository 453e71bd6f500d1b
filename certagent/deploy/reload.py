"""Make the web server load what `current` now shows: the post-run hook, once for a
group; or, with `deploy.haproxy_socket`, haproxy's runtime API first (every linked
bundle replaced in place, no reload), the hook only if that fails.

Side effects: subprocesses (the hook), a Unix socket (haproxy's), through the runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import layout
from ..steps import Steps
from .hooks import run_command
from .ports import DeployFailed, Member, Runner, need


def reload(run: Runner, stage: str, members: Sequence[Member], action: str, steps: Steps) -> None:
    """The first member's hook, once for all (`action`: deploy, or rollback: then with
    each member's previous release when it has one); recorded in `steps`."""
    first = members[0]
    deploy = first.deploy
    hook = deploy.hook
    if hook is None and deploy.haproxy_socket is None:
        return
    release = first.release if action == "deploy" else (first.previous or first.release)
    names = [m.spec.name for m in members] if len(members) > 1 else []
    extra = {"CERTAGENT_GROUP": " ".join(names)} if names else {}
    with steps.step("reload" if action == "deploy" else "reload-old") as notes:
        if deploy.haproxy_socket is not None:
            refused = runtime_update(deploy.haproxy_socket, members, notes)
            if refused is None:
                return
            if hook is None:
                raise DeployFailed(f"haproxy's runtime API: {refused}")
            notes.append(f"haproxy's runtime API: {refused}; reloading instead")
        assert hook is not None  # noqa: S101 - returned above when there is none
        result = run_command(run, hook, first.spec, release, action, stage, extra=extra)
        if not result.ok:
            raise DeployFailed(f"post-run hook failed: {result.explain()}")
        if names:
            notes.append(f"once for {len(names)} certificates: {' '.join(names)}")
        notes.append(result.output.strip()[-500:])


def runtime_update(sock: Path, members: Sequence[Member], notes: list[str]) -> str | None:
    """Each linked bundle, as `current` now shows it, replaced in place in haproxy;
    None when all were, else why not (the caller reloads instead)."""
    from .haproxy import RuntimeApiError, update  # deferred: haproxy users only

    unique = {m.spec.name: m.spec for m in members}.values()
    bundles = [link.dest for s in unique for link in need(s).links
               if link.file == layout.BUNDLE]  # fmt: skip
    if not bundles:
        return "no `bundle` among deploy.links to update"
    try:
        for dest in bundles:
            notes.append(update(sock, dest, dest.read_bytes(), 10.0))
    except (RuntimeApiError, OSError) as exc:
        return str(exc)
    notes.append("updated over haproxy's runtime API: no reload")
    return None
